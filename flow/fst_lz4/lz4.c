/* Literals-only LZ4 block encoder; see lz4.h for why it exists.
 *
 * LZ4 block format: a block is a series of sequences. A sequence starts with a token byte whose
 * high nibble is the literal length (15 means "15 plus the following bytes": each 255 byte adds
 * 255 and continues, the first byte below 255 adds its value and ends the length), followed by
 * the literals, then a match offset and length. The last sequence of a block stops after its
 * literals. Here the whole input is that last sequence, so the match part of the token (low
 * nibble) is 0 and no offset follows.
 */
#include "lz4.h"

#include <stddef.h>
#include <string.h>

/* Bytes needed to store n literals as one final sequence. */
static size_t literals_block_size(size_t n)
{
    size_t extension = n >= 15 ? (n - 15) / 255 + 1 : 0;
    return 1 + extension + n;
}

int LZ4_compressBound(int inputSize)
{
    if (inputSize < 0 || inputSize > LZ4_MAX_INPUT_SIZE)
        return 0;
    return inputSize + inputSize / 255 + 16;
}

int LZ4_compress_default(const char *src, char *dst, int srcSize, int dstCapacity)
{
    if (srcSize < 0 || srcSize > LZ4_MAX_INPUT_SIZE || dstCapacity <= 0 || dst == NULL
        || (src == NULL && srcSize > 0))
        return 0;
    size_t n = (size_t)srcSize;
    size_t size = literals_block_size(n);
    if (size > (size_t)dstCapacity)
        return 0;

    unsigned char *out = (unsigned char *)dst;
    if (n < 15) {
        *out++ = (unsigned char)(n << 4);
    } else {
        size_t rest = n - 15;
        *out++ = 0xF0;
        while (rest >= 255) {
            *out++ = 255;
            rest -= 255;
        }
        *out++ = (unsigned char)rest;
    }
    if (n > 0)
        memcpy(out, src, n);
    return (int)size;
}
