// The threaded driver of encode and decode: groups are encoded (decoded) in parallel through the
// SIMD code kernel, a chunk at a time: 8-bit and 4-bit codes straight into the bit stream, other
// widths into one byte per code, each chunk then packed into (unpacked from) the stream at once.
// Chunks written in parallel start at multiples of 8 elements, hence on byte boundaries, so no two
// threads write the same byte.
// Element formats the code kernel does not cover (wider than 8 bits, unsigned, E8M0 elements) run
// the scalar reference.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <numeric>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "canonical_layout.hpp"
#include "code_kernel.hpp"
#include "column_layout.hpp"
#include "column_scales.hpp"
#include "parallel_ranges.hpp"
#include "qcast/element_codec.hpp"
#include "qcast/format_names.hpp"
#include "qcast/kernels.hpp"
#include "qcast/packing.hpp"
#include "span_kernel.hpp"

// The packed stream's bytes are read and written as machine words here.
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "qcast's code kernels assume a little-endian host"
#endif

namespace qcast::kernels {
namespace {

// Runs body(first, last) over [0, n) in ranges that start at multiples of 8.
template <class Body>
void parallel_octets(std::int64_t n, int threads, Body&& body) {
  parallel_ranges((n + 7) / 8, threads, 8, [&](std::int64_t b, std::int64_t e) { body(b * 8, std::min(e * 8, n)); });
}

// Packs codes[0, count) into the bit stream of packing.hpp from byte `out` on (the run starts on a
// byte boundary: its first element index is a multiple of 8).
template <class Code>
void pack_run(const Code* codes, std::int64_t count, int bits, std::uint8_t* out) {
  if (bits == 8 && sizeof(Code) == 1) {
    std::memcpy(out, codes, std::size_t(count));
    return;
  }
  if (bits == 8) {  // 8-bit scale codes from 32-bit words (E8M0, UE4M3)
    for (std::int64_t i = 0; i < count; ++i) out[i] = std::uint8_t(codes[i]);
    return;
  }
  if (bits == 32 && sizeof(Code) == 4) {  // binary32 scales: their 4 little-endian bytes
    std::memcpy(out, codes, std::size_t(count) * 4);
    return;
  }
  std::int64_t i = 0;
  if (bits == 4) {  // two codes per byte, the first in the low nibble
    for (; i + 1 < count; i += 2) *out++ = std::uint8_t((codes[i] & 0xF) | (codes[i + 1] & 0xF) << 4);
    if (i < count) *out = std::uint8_t(codes[i] & 0xF);
    return;
  }
  if (bits == 6 && sizeof(Code) == 1) {  // eight codes in six bytes, moved together in a 64-bit word
    for (; i + 8 <= count; i += 8, out += 6) {
      std::uint64_t x;
      std::memcpy(&x, codes + i, 8);  // byte k holds code k (little-endian)
      x &= 0x3F3F3F3F3F3F3F3Full;
      x = (x & 0x003F003F003F003Full) | (x & 0x3F003F003F003F00ull) >> 2;  // 12 bits per 16-bit lane
      x = (x & 0x00000FFF00000FFFull) | (x & 0x0FFF00000FFF0000ull) >> 4;  // 24 bits per 32-bit lane
      x = (x & 0x0000000000FFFFFFull) | (x & 0x00FFFFFF00000000ull) >> 8;  // 48 bits
      const std::uint32_t low = std::uint32_t(x);  // little-endian, as the stream's bytes
      const std::uint16_t high = std::uint16_t(x >> 32);
      std::memcpy(out, &low, 4);
      std::memcpy(out + 4, &high, 2);
    }
  }
  if (bits == 6) {  // four codes in three bytes
    for (; i + 4 <= count; i += 4, out += 3) {
      const std::uint32_t v = std::uint32_t(codes[i] & 0x3F) | std::uint32_t(codes[i + 1] & 0x3F) << 6 |
                              std::uint32_t(codes[i + 2] & 0x3F) << 12 | std::uint32_t(codes[i + 3] & 0x3F) << 18;
      out[0] = std::uint8_t(v);
      out[1] = std::uint8_t(v >> 8);
      out[2] = std::uint8_t(v >> 16);
    }
  }
  const std::uint64_t mask = bits >= 32 ? 0xFFFFFFFFull : (std::uint64_t{1} << bits) - 1;
  std::uint64_t acc = 0;
  int filled = 0;
  for (; i < count; ++i) {
    acc |= (std::uint64_t(codes[i]) & mask) << filled;
    for (filled += bits; filled >= 8; filled -= 8, acc >>= 8) *out++ = std::uint8_t(acc);
  }
  if (filled > 0) *out = std::uint8_t(acc);  // only at the end of the stream (or of a run of 8k codes)
}

// The inverse of pack_run: count codes from the stream at byte `in` (a byte boundary) into codes.
void unpack_run(const std::uint8_t* in, int bits, std::uint8_t* codes, std::int64_t count) {
  if (bits == 8) {
    std::memcpy(codes, in, std::size_t(count));
    return;
  }
  std::int64_t i = 0;
  if (bits == 4) {
    for (; i + 1 < count; i += 2, ++in) {
      codes[i] = *in & 0xF;
      codes[i + 1] = *in >> 4;
    }
    if (i < count) codes[i] = *in & 0xF;
    return;
  }
  if (bits == 6) {  // six bytes hold eight codes: spread in a 64-bit word, the inverse of pack_run's
    for (; i + 8 <= count; i += 8, in += 6) {
      std::uint32_t low;
      std::uint16_t high;
      std::memcpy(&low, in, 4);  // little-endian, as the stream's bytes
      std::memcpy(&high, in + 4, 2);
      std::uint64_t x = low | std::uint64_t(high) << 32;
      x = (x & 0x0000000000FFFFFFull) | (x & 0x0000FFFFFF000000ull) << 8;  // 24 bits per 32-bit lane
      x = (x & 0x00000FFF00000FFFull) | (x & 0x00FFF00000FFF000ull) << 4;  // 12 bits per 16-bit lane
      x = (x & 0x003F003F003F003Full) | (x & 0x0FC00FC00FC00FC0ull) << 2;  // 6 bits per byte
      std::memcpy(codes + i, &x, 8);
    }
    for (; i + 4 <= count; i += 4, in += 3) {
      const std::uint32_t v = std::uint32_t(in[0]) | std::uint32_t(in[1]) << 8 | std::uint32_t(in[2]) << 16;
      codes[i] = std::uint8_t(v & 0x3F);
      codes[i + 1] = std::uint8_t(v >> 6 & 0x3F);
      codes[i + 2] = std::uint8_t(v >> 12 & 0x3F);
      codes[i + 3] = std::uint8_t(v >> 18);
    }
  }
  const std::uint32_t mask = (1u << bits) - 1;
  std::uint32_t acc = 0;
  int filled = 0;
  for (; i < count; ++i) {
    for (; filled < bits; filled += 8) acc |= std::uint32_t(*in++) << filled;
    codes[i] = std::uint8_t(acc & mask);
    acc >>= bits;
    filled -= bits;
  }
}

// Codes of up to this many elements are made (read) at a time in a per-thread buffer and packed
// straight into (unpacked straight from) the stream. One byte per code for the whole tensor would
// cost a serial zero fill and a page fault per 4 KiB on every call: about half of encode's time
// on 64M elements.
constexpr std::int64_t kChunkCodes = 4096;

// Chunk length for runs of whole blocks: a multiple of the block and of 8 (byte-aligned starts).
std::int64_t block_chunk(std::int64_t block) {
  const std::int64_t unit = std::lcm(block, std::int64_t{8});
  return std::max<std::int64_t>(1, kChunkCodes / unit) * unit;
}

// Block granularity along the last axis: groups are contiguous blocks of lines, in line order.
bool along_last_axis(const Format& f, const Shape& shape) {
  if (f.granularity != Granularity::block || shape.empty()) return false;
  const int rank = int(shape.size());
  return (f.axis < 0 ? f.axis + rank : f.axis) == rank - 1;
}

std::string nan_message(const Format& f, std::int64_t i) {
  return "element " + std::to_string(i) + " is NaN, which " + format_name(f) + " cannot encode";
}

// Where encode reads binary32 values, a chunk of contiguous elements at a time: at(c, m) points to
// elements [c, c + m) as binary32, valid until the next call; value(i) is element i (strided groups).
// FloatInput: the float32 tensor itself. Widened16: a bfloat16 / float16 tensor, each chunk widened
// (exactly) into a per-thread tile, so the tensor is read once, without a whole-tensor float32 copy.
struct FloatInput {
  const float* in;
  const float* at(std::int64_t c, std::int64_t) const { return in + c; }
  float value(std::int64_t i) const { return in[i]; }
  detail::GroupStats stats(std::int64_t n, int threads) const { return parallel_stats(in, n, threads); }
  GroupScale group_scale_of(const detail::Group& grp, const Format& f, float amax_t, float s_t) const {
    return contiguous_group_scale(in, grp, f, amax_t, s_t);
  }
  detail::GroupStats strided_stats(const detail::Group& grp) const { return detail::group_stats(in, grp); }
};

struct Widened16 {
  DType t;
  const std::uint16_t* in;
  const float* at(std::int64_t c, std::int64_t m) const {
    thread_local std::vector<float> tile;
    if (tile.size() < std::size_t(m)) tile.resize(std::size_t(m));
    widen_span(t, in + c, tile.data(), std::size_t(m));
    return tile.data();
  }
  float value(std::int64_t i) const { return widen(t, in[i]); }
  detail::GroupStats stats(std::int64_t n, int threads) const { return parallel_stats16(t, in, n, threads); }
  GroupScale group_scale_of(const detail::Group& grp, const Format& f, float amax_t, float s_t) const {
    const detail::GroupStats st = widened_group_stats(t, in, grp);
    return group_scale(f, st.amax, st.nonfinite, amax_t, s_t);
  }
  detail::GroupStats strided_stats(const detail::Group& grp) const {  // detail::group_stats of the values
    detail::GroupStats st;
    grp.for_each([&](std::int64_t i) {
      const float a = std::fabs(value(i));
      if (!std::isfinite(a)) st.nonfinite = true;
      else if (a > st.amax) st.amax = a;
    });
    return st;
  }
};

// qcast::encode's element code for element i (value x) of a group with scale g: x scaled where g is
// finite; 0 under a NaN scale (the scale carries the NaN); a signed zero under the other kinds.
std::uint8_t element_code_of(const Format& f, const GroupScale& g, float s_t, float x, const CastOptions& o,
                             std::int64_t i) {
  float v;
  switch (g.kind) {
    case GroupScale::Kind::nan: v = 0.0f; break;
    case GroupScale::Kind::finite: v = detail::scaled_input(f, x, g, s_t); break;
    default: v = std::copysign(0.0f, x);
  }
  return std::uint8_t(encode_element(f.element, v, o, std::uint64_t(i)));
}

// Encode of groups strided across rows (column_layout.hpp), band by band a chunk of columns at a
// time as cast_column_groups runs them: every column's amax over the chunk's rows in one pass, the
// scales (codes into scale_codes by group), then each row's codes with a scale per element
// (encode_columns). Rows are contiguous runs of flat indices, so stochastic rounding draws the
// reference's numbers.
template <class Input>
void encode_column_bands(const Input& input, const ColumnLayout& cols, std::int64_t n, const Format& f,
                         const CastOptions& o, const CodeParams& params, float amax_t, float s_t, int threads,
                         std::uint8_t* packed, std::uint32_t* scale_codes) {
  const int bits = f.element.bits();
  // Where rows are multiples of 8 elements, every row chunk starts on a byte of the stream (chunks
  // are multiples of 16 columns): 8-bit and 4-bit codes go straight in, other widths are packed a
  // row chunk at a time. Otherwise two threads' rows may share a byte: one byte per code for the
  // whole tensor (8-bit: the stream itself), packed after.
  const bool rows_on_bytes = bits == 8 || cols.width % 8 == 0;
  const bool packs_itself = bits == 8 || bits == 4;
  const CodeLayout stream_layout = bits == 4 ? CodeLayout::nibbles : CodeLayout::bytes;
  std::vector<std::uint8_t> whole_codes(rows_on_bytes ? 0 : static_cast<std::size_t>(n));
  struct Rows {  // a thread's view of the input, and its buffer for a row chunk's codes
    const Input& input;
    std::vector<std::uint8_t> codes;
    const float* read(std::int64_t at, std::int64_t m) const { return input.at(at, m); }
  };
  auto make_rows = [&](std::int64_t w) { return Rows{input, std::vector<std::uint8_t>(static_cast<std::size_t>(w))}; };
  for_each_column_chunk(cols, f, amax_t, s_t, threads, make_rows,
                        [&](Rows& rows, const Band& band, std::int64_t k0, std::int64_t m,
                            const ColumnChunkScales& scales) {
    std::copy(scales.code.begin(), scales.code.begin() + m, scale_codes + band.group0 + k0);
    const ColumnScales cs = scales.view(f.tensor_scale, s_t);
    for (std::int64_t r = 0; r < band.rows; ++r) {
      const std::int64_t at = band.base + r * cols.width + k0;
      // The row's codes: in the stream, in rows.codes (packed after), or in the whole-tensor bytes.
      const bool in_stream = rows_on_bytes && packs_itself;
      std::uint8_t* const dst = !rows_on_bytes ? whole_codes.data() + at
                                : in_stream    ? packed + at * bits / 8
                                               : rows.codes.data();
      const CodeLayout layout = in_stream ? stream_layout : CodeLayout::bytes;
      encode_columns(params, cs, rows.read(at, m), dst, layout, std::size_t(m), std::uint64_t(at));
      for (std::size_t j = 0; j < scales.special.size(); ++j) {  // columns whose scale is not finite
        const std::int64_t k = scales.special[j];
        GroupScale g;
        g.kind = scales.special_kind[j];
        const std::uint8_t code = element_code_of(f, g, s_t, input.value(at + k), o, at + k);
        if (layout == CodeLayout::nibbles) {  // k is the offset from a byte boundary
          std::uint8_t& byte = dst[k / 2];
          byte = k % 2 ? std::uint8_t((byte & 0x0F) | code << 4) : std::uint8_t((byte & 0xF0) | code);
        } else {
          dst[k] = code;
        }
      }
      if (rows_on_bytes && !packs_itself) pack_run(rows.codes.data(), m, bits, packed + at * bits / 8);
    }
  });
  if (!rows_on_bytes)
    parallel_octets(n, threads, [&](std::int64_t b, std::int64_t end) {
      pack_run(whole_codes.data() + b, end - b, bits, packed + b * bits / 8);
    });
}

// The compiled encode of `input` into e; false where it does not run and the caller must encode
// another way: element formats the code kernel does not cover, and two-level scales whose divisors
// can round to 0 (below). Every byte of codes and scales is written (packing writes whole bytes),
// so buffers of the right size are reused as they are.
template <class Input>
bool encode_with(Encoded& e, const Input& input, const Shape& shape, const Format& f, const CastOptions& o,
                 int threads) {
  detail::check_format(f, o);
  if (!code_kernel_supports(f.element)) return false;
  threads = resolve_threads(threads);
  const detail::GroupLayout layout(shape, f);
  const std::int64_t n = layout.elements();
  const std::int64_t groups = f.is_scaled() ? layout.groups() : 0;
  const int bits = f.element.bits();
  const CodeParams params = code_params(f.element, o);
  e.format = f;
  e.shape = shape;
  e.tensor_scale = 1.0f;
  e.codes.resize(packed_size(std::size_t(n), bits));
  std::uint8_t* const packed = e.codes.data();
  // 8-bit and 4-bit codes are written by the kernels straight into the stream (code_layout); other
  // widths one byte per code into a chunk buffer, packed from there.
  const bool packs_itself = bits == 8 || bits == 4;
  const CodeLayout code_layout = bits == 4 ? CodeLayout::nibbles : CodeLayout::bytes;
  // Encodes the contiguous elements [b, end) (b a multiple of 8) with one scale, a chunk at a time;
  // returns the index of the first NaN that a format without NaN codes cannot take, or end.
  auto encode_range = [&](SpanScale mode, float s, float s_t, std::int64_t b, std::int64_t end) {
    std::uint8_t chunk[kChunkCodes];
    for (std::int64_t c = b; c < end; c += kChunkCodes) {
      const std::int64_t m = std::min(kChunkCodes, end - c);
      std::uint8_t* const stream = packed + c * bits / 8;
      const std::size_t done = encode_span(params, mode, s, s_t, input.at(c, m), packs_itself ? stream : chunk,
                                           code_layout, std::size_t(m), std::uint64_t(c));
      if (std::int64_t(done) < m) return c + std::int64_t(done);
      if (!packs_itself) pack_run(chunk, m, bits, stream);
    }
    return end;
  };
  if (!f.is_scaled()) {
    std::atomic<std::int64_t> first_nan{n};
    parallel_octets(n, threads, [&](std::int64_t b, std::int64_t end) {
      const std::int64_t bad = encode_range(SpanScale::none, 1.0f, 1.0f, b, end);
      std::int64_t seen = first_nan.load();  // keep the lowest index, as the reference reports it
      while (bad < end && bad < seen && !first_nan.compare_exchange_weak(seen, bad)) {
      }
    });
    if (first_nan.load() < n) throw std::domain_error(nan_message(f, first_nan.load()));
    e.scales.clear();
    return true;
  }
  const detail::Group first = layout.group(0);
  const bool one_contiguous_group = groups == 1 && first.runs == 1 && first.stride == 1;
  // One statistics pass serves the tensor scale and the scale of a single contiguous group.
  const detail::GroupStats whole = (f.tensor_scale && !o.tensor_amax) || one_contiguous_group
                                       ? input.stats(n, threads)
                                       : detail::GroupStats{};
  const float amax_t = detail::tensor_amax_of(f, o, [&] { return whole.amax; /* over finite elements */ });
  const float s_t = f.tensor_scale ? tensor_scale_of(f, amax_t) : 1.0f;
  if (divisor_may_vanish(f, amax_t, s_t)) return false;
  e.tensor_scale = s_t;
  std::vector<std::uint32_t> scale_codes(static_cast<std::size_t>(groups));
  const SpanScale mode = span_scale_mode(f);
  const std::int64_t per_group = std::max<std::int64_t>(1, n / std::max<std::int64_t>(groups, 1));
  GroupScale single;  // one scale (per-tensor formats): reduce in parallel, then encode ranges in parallel
  if (one_contiguous_group) single = group_scale(f, whole.amax, whole.nonfinite, amax_t, s_t);
  const std::int64_t len = shape.empty() ? 1 : shape.back();
  if (!one_contiguous_group && along_last_axis(f, shape) && n > 0 && len % 8 == 0) {  // lines of blocks
    const std::int64_t per_line = (len + f.block_size - 1) / f.block_size;
    const std::int64_t chunk_len = std::min(block_chunk(f.block_size), len);
    const BlockParams bp = block_params(f, o, amax_t, s_t);
    CodeParams scale_code;
    if (bp.scale_path == BlockParams::ScalePath::minifloat) {
      ElementFormat signed_scale = f.scale;  // the grid block_params quantizes the scale on
      signed_scale.is_signed = true;
      scale_code = code_params(signed_scale, detail::scale_cast_options());
    }
    // Nibbles in the stream need every block to start on a byte: an even block size.
    const bool blocks_pack_themselves = bits == 8 || (bits == 4 && f.block_size % 2 == 0);
    parallel_ranges(n / len, threads, len, [&](std::int64_t b, std::int64_t end) {
      std::vector<std::uint8_t> chunk(blocks_pack_themselves ? 0 : static_cast<std::size_t>(chunk_len));
      for (std::int64_t line = b; line < end; ++line)
        for (std::int64_t s = 0; s < len; s += chunk_len) {  // s is a multiple of the block
          const std::int64_t at = line * len + s, m = std::min(chunk_len, len - s);
          std::uint8_t* const stream = packed + at * bits / 8;
          encode_blocks(bp, params, scale_code, input.at(at, m), blocks_pack_themselves ? stream : chunk.data(),
                        blocks_pack_themselves ? code_layout : CodeLayout::bytes,
                        scale_codes.data() + line * per_line + s / f.block_size, std::size_t(m), std::uint64_t(at), o);
          if (!blocks_pack_themselves) pack_run(chunk.data(), m, bits, stream);
        }
    });
  } else if (one_contiguous_group && single.kind == GroupScale::Kind::finite) {
    scale_codes[0] = single.code;
    parallel_octets(n, threads, [&](std::int64_t b, std::int64_t end) {
      encode_range(mode, single.value, s_t, b, end);  // a finite group holds no NaN
    });
  } else if (const ColumnLayout cols(shape, f); cols.bands > 0) {  // groups strided across rows
    encode_column_bands(input, cols, n, f, o, params, amax_t, s_t, threads, packed, scale_codes.data());
  } else {  // any other layout: a group at a time
    auto scale_of = [&](const detail::Group& grp) {
      if (one_contiguous_group) return single;
      if (grp.stride == 1) return input.group_scale_of(grp, f, amax_t, s_t);  // contiguous runs
      const detail::GroupStats st = input.strided_stats(grp);
      return group_scale(f, st.amax, st.nonfinite, amax_t, s_t);
    };
    // Codes of the contiguous elements [c, c + m) of a group whose scale is not finite.
    auto encode_non_finite = [&](const GroupScale& g, std::int64_t c, std::int64_t m, std::uint8_t* dst) {
      const float* const x = input.at(c, m);
      for (std::int64_t j = 0; j < m; ++j) dst[j] = element_code_of(f, g, s_t, x[j], o, c + j);
    };
    // Groups of contiguous runs whose runs all start and end on a multiple of 8 elements (per channel
    // along the first axis of rows of 8k or along a middle axis with 8k inner elements, blocks of a
    // 1-D tensor, a non-finite single group) own whole bytes of the stream: each run is encoded
    // into it a chunk at a time, as ranges of one scale are. (A group's last run may end the tensor.)
    bool byte_aligned = true;
    for (std::int64_t gi = 0; byte_aligned && gi < groups; ++gi) {
      const detail::Group grp = layout.group(gi);
      byte_aligned = grp.stride == 1 && grp.base % 8 == 0 &&
                     (grp.runs == 1 || (grp.run_stride % 8 == 0 && grp.count % 8 == 0));
    }
    if (byte_aligned) {
      parallel_ranges(groups, threads, per_group, [&](std::int64_t b, std::int64_t end) {
        std::uint8_t chunk[kChunkCodes];
        for (std::int64_t gi = b; gi < end; ++gi) {
          const detail::Group grp = layout.group(gi);
          const GroupScale g = scale_of(grp);
          scale_codes[std::size_t(gi)] = g.code;
          for (std::int64_t r = 0; r < grp.runs; ++r) {
            const std::int64_t run = grp.base + r * grp.run_stride;
            if (g.kind == GroupScale::Kind::finite) {  // a finite group holds no NaN
              encode_range(mode, g.value, s_t, run, run + grp.count);
              continue;
            }
            for (std::int64_t c = run; c < run + grp.count; c += kChunkCodes) {
              const std::int64_t m = std::min(kChunkCodes, run + grp.count - c);
              encode_non_finite(g, c, m, chunk);
              pack_run(chunk, m, bits, packed + c * bits / 8);
            }
          }
        }
      });
    } else {  // groups may share a byte: one byte per code (8-bit: the stream itself), packed after
      std::vector<std::uint8_t> whole_codes(bits == 8 ? 0 : static_cast<std::size_t>(n));
      std::uint8_t* const codes = bits == 8 ? packed : whole_codes.data();
      parallel_ranges(groups, threads, per_group, [&](std::int64_t b, std::int64_t end) {
        for (std::int64_t gi = b; gi < end; ++gi) {
          const detail::Group grp = layout.group(gi);
          const GroupScale g = scale_of(grp);
          scale_codes[std::size_t(gi)] = g.code;
          if (grp.stride != 1) {
            grp.for_each([&](std::int64_t i) { codes[i] = element_code_of(f, g, s_t, input.value(i), o, i); });
            continue;
          }
          for (std::int64_t r = 0; r < grp.runs; ++r) {
            const std::int64_t run = grp.base + r * grp.run_stride;
            for (std::int64_t c = run; c < run + grp.count; c += kChunkCodes) {
              const std::int64_t m = std::min(kChunkCodes, run + grp.count - c);
              if (g.kind == GroupScale::Kind::finite)  // a finite group holds no NaN
                encode_span(params, mode, g.value, s_t, input.at(c, m), codes + c, CodeLayout::bytes, std::size_t(m),
                            std::uint64_t(c));
              else
                encode_non_finite(g, c, m, codes + c);
            }
          }
        }
      });
      if (bits != 8)
        parallel_octets(n, threads, [&](std::int64_t b, std::int64_t end) {
          pack_run(codes + b, end - b, bits, packed + b * bits / 8);
        });
    }
  }
  const int scale_bits = f.scale_storage_bits();
  e.scales.resize(packed_size(std::size_t(groups), scale_bits));
  parallel_octets(groups, threads, [&](std::int64_t b, std::int64_t end) {
    pack_run(scale_codes.data() + b, end - b, scale_bits, e.scales.data() + b * scale_bits / 8);
  });
  return true;
}

}  // namespace

Encoded encode(const float* in, const Shape& shape, const Format& f, const CastOptions& o, int threads) {
  Encoded e;
  encode_into(e, in, shape, f, o, threads);
  return e;
}

// encode_with on the canonical layout; the result keeps the shape and format as given.
template <class Input>
bool encode_canonical(Encoded& e, const Input& input, const Shape& shape, const Format& f, const CastOptions& o,
                      int threads) {
  detail::check_format(f, o);
  const CanonicalLayout canonical = canonical_layout(shape, f);
  if (!encode_with(e, input, canonical.shape, canonical.format, o, threads)) return false;
  e.shape = shape;
  e.format = f;
  return true;
}

void encode_into(Encoded& e, const float* in, const Shape& shape, const Format& f, const CastOptions& o, int threads) {
  if (!encode_canonical(e, FloatInput{in}, shape, f, o, threads)) e = qcast::encode(in, shape, f, o);
}

namespace {

// Unpacks the codes of elements [first, first + count) into chunk (room for count + 7 codes) and
// returns where the code of `first` landed: reading may start at any element, since it starts at the
// byte boundary at or before it.
const std::uint8_t* unpack_chunk(const Encoded& e, int bits, std::int64_t first, std::int64_t count,
                                 std::uint8_t* chunk) {
  const std::int64_t aligned = first & ~std::int64_t{7};
  unpack_run(e.codes.data() + aligned * bits / 8, bits, chunk, first + count - aligned);
  return chunk + (first - aligned);
}

}  // namespace

namespace {

// Where decoded values go, a chunk of contiguous elements at a time: write(c, m, fill) has fill(dst,
// stream) write elements [c, c + m) as binary32 at dst (streaming stores where `stream`). Strided
// groups: FloatOutput's elements are stored one by one; Narrowed16::put_group takes a group's values
// in grp.for_each order and narrows them at once. FloatOutput: straight into the float32 result. Narrowed16: into
// a tile, then narrowed to bfloat16 / float16 (decode to a 16-bit tensor without a whole-tensor
// float32 copy).
struct FloatOutput {
  float* out;
  bool stream;
  template <class Fill>
  void write(std::int64_t c, std::int64_t, Fill&& fill) const {
    fill(out + c, stream);
  }
};

struct Narrowed16 {
  DType t;
  std::uint16_t* out;
  void put_group(const detail::Group& grp, const float* values) const {  // narrowed at once, then scattered
    thread_local std::vector<std::uint16_t> narrowed;
    const std::size_t m = std::size_t(grp.runs * grp.count);
    if (narrowed.size() < m) narrowed.resize(m);
    narrow_span(t, values, narrowed.data(), m);
    const std::uint16_t* v = narrowed.data();
    grp.for_each([&](std::int64_t i) { out[i] = *v++; });
  }
  template <class Fill>
  void write(std::int64_t c, std::int64_t m, Fill&& fill) const {
    thread_local std::vector<float> tile;
    if (tile.size() < std::size_t(m)) tile.resize(std::size_t(m));
    fill(tile.data(), false);
    narrow_span(t, tile.data(), out + c, std::size_t(m));
  }
};

// The compiled decode into `output`; false where it does not run and the caller must decode another
// way: element formats the code kernel does not cover, and short buffers (the reference reports them).
template <class Output>
bool decode_into(const Encoded& e, const Output& output, int threads) {
  detail::check_format(e.format);
  const CanonicalLayout canonical = canonical_layout(e.shape, e.format);
  const Shape& shape = canonical.shape;
  const Format& f = canonical.format;
  if (!code_kernel_supports(f.element)) return false;
  threads = resolve_threads(threads);
  const detail::GroupLayout layout(shape, f);
  const std::int64_t n = layout.elements();
  const int bits = f.element.bits();
  const std::int64_t groups = f.is_scaled() ? layout.groups() : 0;
  if (e.codes.size() < packed_size(std::size_t(n), bits) ||
      (groups && e.scales.size() < packed_size(std::size_t(groups), f.scale_storage_bits())))
    return false;  // the reference reports which part is short
  if (divisor_may_vanish(f, 1.0f, e.tensor_scale)) return false;  // q * s * 0 may be Inf * 0
  float table[256];
  for (std::uint32_t c = 0; c < 256; ++c) table[c] = c >> bits ? 0.0f : decode_element(f.element, c);
  const CodeParams params = code_params(f.element, CastOptions{});
  // 8-bit and 4-bit codes are read by the kernels straight from the stream (4-bit from an even
  // element on); other widths are unpacked a chunk at a time into one byte per code first.
  const CodeLayout code_layout = bits == 4 ? CodeLayout::nibbles : CodeLayout::bytes;
  auto reads_itself = [&](std::int64_t first) { return bits == 8 || (bits == 4 && first % 2 == 0); };
  // Decodes the contiguous elements [b, end) with one scale, a chunk at a time.
  auto decode_range = [&](SpanScale mode, float s, std::int64_t b, std::int64_t end) {
    std::uint8_t chunk[kChunkCodes + 8];
    for (std::int64_t c = b; c < end; c += kChunkCodes) {
      const std::int64_t m = std::min(kChunkCodes, end - c);
      output.write(c, m, [&](float* dst, bool stream) {
        if (reads_itself(c))
          decode_span(params, table, mode, s, e.tensor_scale, e.codes.data() + c * bits / 8, code_layout, dst,
                      std::size_t(m), stream);
        else
          decode_span(params, table, mode, s, e.tensor_scale, unpack_chunk(e, bits, c, m, chunk), CodeLayout::bytes,
                      dst, std::size_t(m), stream);
      });
    }
  };
  // Elements [b, end) of a group whose scale code is NaN.
  auto fill_nan = [&](std::int64_t b, std::int64_t end) {
    for (std::int64_t c = b; c < end; c += kChunkCodes) {
      const std::int64_t m = std::min(kChunkCodes, end - c);
      output.write(c, m, [&](float* dst, bool) { std::fill(dst, dst + m, detail::canonical_nan()); });
    }
  };
  if (!f.is_scaled()) {
    parallel_octets(n, threads, [&](std::int64_t b, std::int64_t end) { decode_range(SpanScale::none, 1.0f, b, end); });
    return true;
  }
  const SpanScale mode = span_scale_mode(f);
  const detail::Group first = layout.group(0);
  if (groups == 1 && first.runs == 1 && first.stride == 1) {  // one scale: element ranges in parallel
    const GroupScale g = group_scale_from_code(f, unpack_code(e.scales.data(), 0, f.scale_storage_bits()));
    parallel_octets(n, threads, [&](std::int64_t b, std::int64_t end) {
      if (g.kind == GroupScale::Kind::nan) fill_nan(b, end);
      else decode_range(mode, g.value, b, end);
    });
    return true;
  }
  if (along_last_axis(f, shape) && n > 0) {  // lines of contiguous blocks
    const int scale_bits = f.scale_storage_bits();
    float scale_table[256];
    if (scale_bits == 8)
      for (std::uint32_t c = 0; c < 256; ++c) scale_table[c] = decode_element(f.scale, c);
    const std::int64_t len = shape.back();
    const std::int64_t per_line = (len + f.block_size - 1) / f.block_size;
    const std::int64_t chunk_len = std::min(block_chunk(f.block_size), len);
    // Straight from the stream where every block starts on a byte (4-bit: even lines and blocks).
    const bool blocks_read_themselves = bits == 8 || (bits == 4 && len % 2 == 0 && f.block_size % 2 == 0);
    parallel_ranges(n / len, threads, len, [&](std::int64_t b, std::int64_t end) {
      std::vector<std::uint8_t> chunk(blocks_read_themselves ? 0 : static_cast<std::size_t>(chunk_len + 8));
      std::vector<float> line_scales(static_cast<std::size_t>(per_line));  // the decoded scales of one line
      const std::uint8_t* const scale_codes = e.scales.data();
      for (std::int64_t line = b; line < end; ++line) {
        for (std::int64_t k = 0; k < per_line; ++k) {
          const std::size_t gi = std::size_t(line * per_line + k);
          line_scales[std::size_t(k)] =
              scale_bits == 8 ? scale_table[scale_codes[gi]]
                              : decode_element(f.scale, unpack_code(scale_codes, gi, scale_bits));
        }
        for (std::int64_t s = 0; s < len; s += chunk_len) {  // s is a multiple of the block
          const std::int64_t at = line * len + s, m = std::min(chunk_len, len - s);
          const float* const scales = line_scales.data() + s / f.block_size;
          output.write(at, m, [&](float* dst, bool stream) {
            if (blocks_read_themselves)
              decode_blocks(params, table, mode, std::size_t(f.block_size), scales, e.tensor_scale,
                            e.codes.data() + at * bits / 8, code_layout, dst, std::size_t(m), stream);
            else
              decode_blocks(params, table, mode, std::size_t(f.block_size), scales, e.tensor_scale,
                            unpack_chunk(e, bits, at, m, chunk.data()), CodeLayout::bytes, dst, std::size_t(m),
                            stream);
          });
        }
      }
    });
    return true;
  }
  if (const ColumnLayout cols(shape, f); cols.bands > 0) {  // groups strided across rows: column bands
    const int scale_bits = f.scale_storage_bits();
    const bool two_level = f.tensor_scale;
    const std::int64_t w = cols.chunk_columns(threads, 32768);
    const std::int64_t chunks = (cols.width + w - 1) / w;
    parallel_ranges(cols.bands * chunks, threads, cols.max_rows * w, [&](std::int64_t tb, std::int64_t te) {
      std::vector<float> scale(static_cast<std::size_t>(w));
      std::vector<std::int64_t> nan_columns;  // columns whose scale code is NaN decode to NaN
      std::vector<std::uint8_t> chunk(static_cast<std::size_t>(w + 8));
      for (std::int64_t t = tb; t < te; ++t) {
        const Band band = cols.band(t / chunks);
        const std::int64_t k0 = (t % chunks) * w, m = std::min(w, cols.width - k0);
        nan_columns.clear();
        for (std::int64_t k = 0; k < m; ++k) {
          const GroupScale g = group_scale_from_code(
              f, unpack_code(e.scales.data(), std::size_t(band.group0 + k0 + k), scale_bits));
          scale[std::size_t(k)] = g.kind == GroupScale::Kind::nan ? 1.0f : g.value;
          if (g.kind == GroupScale::Kind::nan) nan_columns.push_back(k);
        }
        for (std::int64_t r = 0; r < band.rows; ++r) {
          const std::int64_t at = band.base + r * cols.width + k0;
          output.write(at, m, [&](float* dst, bool) {
            if (reads_itself(at))
              decode_columns(params, table, scale.data(), two_level, e.tensor_scale, e.codes.data() + at * bits / 8,
                             code_layout, dst, std::size_t(m));
            else
              decode_columns(params, table, scale.data(), two_level, e.tensor_scale,
                             unpack_chunk(e, bits, at, m, chunk.data()), CodeLayout::bytes, dst, std::size_t(m));
            for (std::int64_t k : nan_columns) dst[k] = detail::canonical_nan();
          });
        }
      }
    });
    return true;
  }
  // Any other layout, a group at a time: contiguous runs (channels along the first or a middle axis)
  // a chunk at a time, other strided groups element by element.
  const std::int64_t per_group = std::max<std::int64_t>(1, n / std::max<std::int64_t>(groups, 1));
  parallel_ranges(groups, threads, per_group, [&](std::int64_t b, std::int64_t end) {
    std::vector<float> values;  // a strided group's values
    for (std::int64_t gi = b; gi < end; ++gi) {
      const detail::Group grp = layout.group(gi);
      const GroupScale g =
          group_scale_from_code(f, unpack_code(e.scales.data(), std::size_t(gi), f.scale_storage_bits()));
      if (grp.stride == 1) {
        for (std::int64_t r = 0; r < grp.runs; ++r) {
          const std::int64_t run = grp.base + r * grp.run_stride;
          if (g.kind == GroupScale::Kind::nan) fill_nan(run, run + grp.count);
          else decode_range(mode, g.value, run, run + grp.count);
        }
        continue;
      }
      auto value = [&](std::int64_t i) {
        return g.kind == GroupScale::Kind::nan
                   ? detail::canonical_nan()
                   : detail::scaled_output(f, table[unpack_code(e.codes.data(), std::size_t(i), bits)], g,
                                           e.tensor_scale);
      };
      if constexpr (std::is_same_v<Output, FloatOutput>) {
        grp.for_each([&](std::int64_t i) { output.out[i] = value(i); });
      } else {
        values.clear();
        grp.for_each([&](std::int64_t i) { values.push_back(value(i)); });
        output.put_group(grp, values.data());
      }
    }
  });
  return true;
}

}  // namespace

void decode(const Encoded& e, float* out, int threads) {
  detail::check_format(e.format);
  const std::int64_t n = detail::GroupLayout(e.shape, e.format).elements();
  if (!decode_into(e, FloatOutput{out, stream_stores_pay(std::size_t(n) * sizeof(float))}, threads))
    qcast::decode(e, out);
}

Encoded encode(const void* in, DType t, const Shape& shape, const Format& f, const CastOptions& o, int threads) {
  Encoded e;
  encode_into(e, in, t, shape, f, o, threads);
  return e;
}

void encode_into(Encoded& e, const void* in, DType t, const Shape& shape, const Format& f, const CastOptions& o,
                 int threads) {
  if (t == DType::f32) return encode_into(e, static_cast<const float*>(in), shape, f, o, threads);
  const auto* src = static_cast<const std::uint16_t*>(in);
  if (encode_canonical(e, Widened16{t, src}, shape, f, o, threads)) return;
  // Formats the code kernel does not cover: the reference encode of the widened tensor.
  threads = resolve_threads(threads);
  const std::int64_t n = detail::GroupLayout(shape, f).elements();
  std::vector<float> wide(static_cast<std::size_t>(n));
  parallel_ranges(n, threads, 1, [&](std::int64_t b, std::int64_t end) {
    widen_span(t, src + b, wide.data() + b, std::size_t(end - b));
  });
  encode_into(e, wide.data(), shape, f, o, threads);
}

void decode(const Encoded& e, void* out, DType t, int threads) {
  if (t == DType::f32) return decode(e, static_cast<float*>(out), threads);
  auto* dst = static_cast<std::uint16_t*>(out);
  if (decode_into(e, Narrowed16{t, dst}, threads)) return;
  threads = resolve_threads(threads);
  const std::int64_t n = detail::GroupLayout(e.shape, e.format).elements();
  std::vector<float> wide(static_cast<std::size_t>(n));
  decode(e, wide.data(), threads);
  parallel_ranges(n, threads, 1, [&](std::int64_t b, std::int64_t end) {
    narrow_span(t, wide.data() + b, dst + b, std::size_t(end - b));
  });
}

}  // namespace qcast::kernels
