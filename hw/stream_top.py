"""Flat AXI4-Stream tops of the units: one adapter, :class:`StreamTop`, and one small class per
exported unit (``npu_gemm``, ``npu_pooling``, ``npu_activation``, ``npu_requant``,
``npu_softmax`` in :data:`hw.verilog.DESIGNS`).

Contract of :class:`StreamTop` (it adds no register and no logic: every port is wired straight
to the unit, so a top has the unit's cycle behaviour). It walks the unit's signature in order:

* an ``amaranth.lib.stream`` member ``x`` becomes ``<prefix>_tdata``, ``_tvalid``, ``_tready``
  and, if the payload is a struct with a ``last`` field, ``_tlast``; the prefix is
  ``s_axis_<stem>`` for a stream into the unit and ``m_axis_<stem>`` for one out of it, the
  stem being ``x`` or what ``stems`` maps it to. ``tdata`` is the rest of the payload, fields
  in their bit order (the whole payload when there is no ``last``);
* a plain input (configuration) ``y`` becomes ``cfg_y``, or, for a struct, one ``cfg_<field>``
  per field;
* a plain output (an error flag, a counter) keeps its name.

Every bus is little-endian, lane 0 in the low bits; ``clk`` and ``rst`` (synchronous,
active-high) come from the default domain. Each unit class below lists its ports; the
contracts of the streams are in the unit's module.
"""

from amaranth.hdl import Cat, Module, Value
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .activation import ActivationLUT
from .pooling import Pooling
from .requantizer import Requantizer
from .softmax import BANKS, SoftmaxUnit
from .systolic import SystolicArray

__all__ = ["StreamTop", "GemmTop", "PoolingTop", "ActivationTop", "RequantTop", "SoftmaxTop"]


def _stream_ports(prefix, interface, inward):
    """``(port, flow seen from the top, unit value, shape)`` of one ``stream.Interface``."""
    there, back = (In, Out) if inward else (Out, In)
    layout = interface.payload.shape()
    framed = isinstance(layout, data.StructLayout) and "last" in layout.members
    if framed:
        # The other fields in layout order, which is their bit order.
        tdata = Cat(*(Value.cast(interface.payload[name])
                      for name in layout.members if name != "last"))
    else:
        tdata = Value.cast(interface.payload)
    yield f"{prefix}_tdata", there, tdata, len(tdata)
    yield f"{prefix}_tvalid", there, interface.valid, 1
    yield f"{prefix}_tready", back, interface.ready, 1
    if framed:
        yield f"{prefix}_tlast", there, interface.payload.last, 1


def _config_ports(name, value, shape):
    """``cfg_*`` inputs of a plain input of the unit, one per field of a struct."""
    if isinstance(shape, data.StructLayout):
        for field_name, field in shape:
            yield f"cfg_{field_name}", In, Value.cast(value[field_name]), field.shape
    else:
        yield f"cfg_{name}", In, Value.cast(value), shape


class StreamTop(wiring.Component):
    """Flat AXI4-Stream and configuration ports of ``core`` (see the module docstring).

    Parameters
    ----------
    core : wiring.Component
        The unit.
    stems : dict of str to str
        Port stem of a stream member whose name is not its stem (``{"operands": "op"}``).
    core_name : str
        Name of the unit's instance in the Verilog hierarchy.
    """

    def __init__(self, core, stems=None, core_name="core"):
        stems = dict(stems or {})
        unknown = sorted(set(stems) - set(core.signature.members))
        if unknown:
            raise ValueError(f"stems: {', '.join(unknown)} not a member of the core")
        self.core = core
        self.core_name = core_name
        #: ``(port, unit value, whether it drives the unit)`` in port order
        self._wires = []
        members = {}
        for port, flow, value, shape in self._flatten(core, stems):
            members[port] = flow(shape)
            self._wires.append((port, value, flow == In))
        super().__init__(members)

    @staticmethod
    def _flatten(core, stems):
        for name, member in core.signature.members.items():
            value = getattr(core, name)
            if member.is_signature:
                if not isinstance(member.signature, stream.Signature):
                    raise TypeError(f"core member {name!r} is neither a stream nor a port")
                inward = member.flow == In
                prefix = f"{'s' if inward else 'm'}_axis_{stems.get(name, name)}"
                yield from _stream_ports(prefix, value, inward)
            elif member.flow == Out:
                yield name, Out, Value.cast(value), member.shape
            else:
                yield from _config_ports(name, value, member.shape)

    def elaborate(self, platform):
        m = Module()
        m.submodules[self.core_name] = self.core
        for port, value, drives_core in self._wires:
            m.d.comb += value.eq(getattr(self, port)) if drives_core \
                else getattr(self, port).eq(value)
        return m


class GemmTop(StreamTop):
    """``npu_gemm``: the systolic array (:class:`hw.systolic.SystolicArray`, R = ``rows``,
    C = ``cols``); ``dsp``: ``"generic"`` or ``"ecp5"``, same cycle timing.

    =====================  ===  ========  =====================================================
    port                   dir  width     meaning
    =====================  ===  ========  =====================================================
    s_axis_op_tdata        in   8(R+C)    bytes 0..R-1: A column (int8), bytes R..R+C-1: B row
    s_axis_op_tvalid/ready      1         handshake
    s_axis_op_tlast        in   1         last reduction step (k = K-1) of a tile
    s_axis_bias_tdata      in   32C       one int32 bias per column, one beat per tile
    s_axis_bias_tvalid/ready    1         handshake
    m_axis_res_tdata       out  32C       one result row: C int32 lanes
    m_axis_res_tvalid/ready     1         handshake
    m_axis_res_tlast       out  1         row R-1 of a tile
    =====================  ===  ========  =====================================================

    The operand stream of a tile is one frame of K beats; its results are one frame of R beats.
    """

    def __init__(self, rows=8, cols=8, out_depth=None, dsp="generic"):
        # "array" (and "unit" for softmax): the instance names the synthesis reports and
        # placements of these tops were made with.
        super().__init__(SystolicArray(rows, cols, out_depth, dsp=dsp),
                         stems={"operands": "op", "result": "res"}, core_name="array")


class PoolingTop(StreamTop):
    """``npu_pooling``: the streaming pooling unit (:class:`hw.pooling.Pooling`, L = ``lanes``).

    =====================  ===  ========  =====================================================
    port                   dir  width     meaning
    =====================  ===  ========  =====================================================
    cfg_h, cfg_w, cfg_c    in   16 each   image height, width, channels (1..max_h/max_w/max_c)
    cfg_k                  in   8         kernel size k (k x k window), 1..max_k
    cfg_stride             in   8         stride >= 1; ceil(k / stride) <= slots unless at most
                                          ``slots`` windows fit (e.g. global pooling)
    cfg_pad                in   8         padding on every side, 0..k//2
    cfg_mode               in   1         0: max pooling, 1: average pooling
    cfg_zero_point         in   8         int8 zero point (the value of average padding)
    s_axis_in_tdata        in   8L        L int8 channels of one pixel (NHWC, channel groups)
    s_axis_in_tvalid/ready      1         handshake
    s_axis_in_tlast        in   1         last beat of an image (only used to drop a refused one)
    m_axis_out_tdata       out  8L        L int8 pooled channels
    m_axis_out_tvalid/ready     1         handshake
    m_axis_out_tlast       out  1         last beat of an output image
    error                  out  1         the last image's configuration was refused (dropped)
    =====================  ===  ========  =====================================================

    The configuration is latched when an image starts (its first beat valid while the unit is
    idle); hold it until that beat is accepted. It may change between images without waiting
    for the outputs.
    """

    def __init__(self, lanes=4, max_h=32, max_w=32, max_c=64, max_k=32, slots=3,
                 registered_config=False, dsp="generic"):
        super().__init__(Pooling(lanes, max_h, max_w, max_c, max_k, slots,
                                 registered_config=registered_config, dsp=dsp),
                         stems={"input": "in", "result": "out"})


class ActivationTop(StreamTop):
    """``npu_activation``: the lookup-table unit (:class:`hw.activation.ActivationLUT`,
    L = ``lanes``, ``init``: the table at start-up).

    =====================  ===  ========  =====================================================
    port                   dir  width     meaning
    =====================  ===  ========  =====================================================
    s_axis_tab_tdata       in   16        byte 0: table index (x + 128), byte 1: int8 entry
    s_axis_tab_tvalid/ready     1         handshake (always ready: one entry per cycle)
    s_axis_in_tdata        in   8L        L int8 inputs
    s_axis_in_tvalid/ready      1         handshake
    s_axis_in_tlast        in   1         end of a frame (passed through)
    m_axis_res_tdata       out  8L        L int8 outputs ``table[x + 128]``
    m_axis_res_tvalid/ready     1         handshake
    m_axis_res_tlast       out  1         copy of the input tlast
    =====================  ===  ========  =====================================================
    """

    def __init__(self, lanes=4, init=None):
        super().__init__(ActivationLUT(lanes, init),
                         stems={"table": "tab", "input": "in", "result": "res"})


class RequantTop(StreamTop):
    """``npu_requant``: the requantizer (:class:`hw.requantizer.Requantizer`, L = ``lanes``);
    ``dsp``: ``"generic"`` or ``"ecp5"``, same cycle timing.

    =====================  ===  ========  =====================================================
    port                   dir  width     meaning
    =====================  ===  ========  =====================================================
    s_axis_acc_tdata       in   32L       L int32 accumulators
    s_axis_acc_tvalid/ready     1         handshake
    s_axis_acc_tlast       in   1         last beat of a frame (beats sharing one params beat)
    s_axis_par_tdata       in   8(9L+3)   bytes 0..4L-1: L int32 bias; 4L..8L-1: L int32 M0;
                                          8L..9L-1: L int8 shift; then int8 zero point, qmin,
                                          qmax
    s_axis_par_tvalid/ready     1         handshake; one beat per frame, consumed with its tlast
    m_axis_res_tdata       out  8L        L int8 results
    m_axis_res_tvalid/ready     1         handshake
    m_axis_res_tlast       out  1         copy of the accumulator tlast
    error                  out  1         sticky: a params beat had a shift outside -31..7 or
                                          qmin > qmax
    =====================  ===  ========  =====================================================
    """

    def __init__(self, lanes=4, dsp="generic"):
        super().__init__(Requantizer(lanes, dsp=dsp), stems={"params": "par", "result": "res"})


class SoftmaxTop(StreamTop):
    """``npu_softmax``: the streaming softmax unit (:class:`hw.softmax.SoftmaxUnit`, L_max =
    ``max_len``); ``dsp``: ``"generic"`` or ``"ecp5"`` (MULT18X18D and DP16KD primitives with
    their registers), same behaviour and cycle counts.

    =============================  ===  =====  ====================================================
    port                           dir  width  meaning
    =============================  ===  =====  ====================================================
    s_axis_x_tdata                 in   8      one int8 logit per beat
    s_axis_x_tvalid/ready               1      handshake
    s_axis_x_tlast                 in   1      last element of a vector (a vector is one frame)
    m_axis_y_tdata                 out  8      one int8 probability per beat (scale 1/256, zp -128)
    m_axis_y_tvalid/ready               1      handshake
    m_axis_y_tlast                 out  1      last element of a vector
    cfg_multiplier                 in   31     ``M0`` of :func:`golden.softmax.softmax_params`
    cfg_right_shift                in   5      ``-shift`` of the same (static while vectors are in
                                               flight)
    cfg_mode                       in   1      0: :func:`golden.softmax.softmax`; 1: TFLite
                                               (:func:`golden.tflite.softmax_tflite`); static
    s_axis_exp_table_tdata         in   39     TFLite mode's exp table: bits 0..7 the entry, 8..38
                                               its value (:func:`golden.tflite.softmax_exp_table`)
    s_axis_exp_table_tvalid/ready       1      handshake (always ready)
    overflow                       out  1      sticky: a frame longer than L_max was dropped
    dropped                        out  16     number of dropped over-long frames (wraps)
    =============================  ===  =====  ====================================================
    """

    def __init__(self, max_len=256, banks=BANKS, dsp="generic"):
        super().__init__(SoftmaxUnit(max_len, banks, dsp=dsp),
                         stems={"logits": "x", "probs": "y"}, core_name="unit")
