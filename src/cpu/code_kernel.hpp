// Parameters of the SIMD code kernels (src/cpu/code_kernel.cpp): element codes of one contiguous
// run of elements that share a scale, one code per byte (formats of at most 8 bits).
#pragma once
#include <cstddef>
#include <cstdint>

#include "qcast/format.hpp"
#include "span_kernel.hpp"

namespace qcast::kernels {

struct CodeParams {
  SpanParams element;          // the quantizer (span_params)
  int bits = 0;                // code width
  int bias = 0;                // minifloat exponent bias
  std::uint32_t sign_mask = 0;
  std::uint32_t inf_code = 0;  // magnitude code of Inf (IEEE-style formats)
  std::uint32_t nan_code = 0;  // detail::nan_code, where the format has one
  bool has_nan = false;
  float min_normal = 0;          // 2^min_exponent: smaller magnitudes are subnormal codes
  float subnormal_code_scale = 0;  // 2^(mantissa_bits - min_exponent): subnormal value -> its code
  std::uint32_t max_code = 0;      // magnitude code of the largest finite value (minifloats)
  // Decode: magnitude codes >= special_from, and the code special_code, have no finite value.
  std::uint32_t special_from = 0, special_code = ~0u;
};

// How the encode kernels write codes: one byte per code, or two 4-bit codes per byte with the first
// in the low nibble (the packed stream of packing.hpp for 4-bit formats). `out` is the byte of the
// run's first code; a nibble run starts on a byte (an even element).
enum class CodeLayout : int { bytes, nibbles };

// Whether the code kernels reproduce the reference encode/decode for this element format: the span
// kernel's formats of at most 8 bits.
bool code_kernel_supports(const ElementFormat& e);
CodeParams code_params(const ElementFormat& e, const CastOptions& o);

// Code i = encode_element(scaled_input(in[i])) for i < n (mode and scales as in quantize_span),
// written to out in `layout`; element i has flat index first + i. Returns n, or the offset of the
// first NaN when the format has no NaN code (codes from there on are unspecified; the caller
// reports the error).
std::size_t encode_span(const CodeParams& p, SpanScale mode, float s, float s_t, const float* in, std::uint8_t* out,
                        CodeLayout layout, std::size_t n, std::uint64_t first);

// out[i] = scaled_output(decode_element(code i)) for i < n, the codes read from `codes` in
// `layout`; table holds decode_element of every code (p from code_params: the format's fields).
// stream: streaming stores where out is vector-aligned (stream_stores_pay of the whole output).
void decode_span(const CodeParams& p, const float* table, SpanScale mode, float s, float s_t, const std::uint8_t* codes,
                 CodeLayout layout, float* out, std::size_t n, bool stream);

// A line of len elements in contiguous blocks of f.block_size (block granularity along the last
// axis): scale_codes[k] and the codes of block k, as qcast::encode writes them; element 0 has flat
// index `first`. bp from block_params; scale_code: code_params of the scale format's signed twin
// (used where bp.scale_path is minifloat). Nibbles need an even block size.
void encode_blocks(const BlockParams& bp, const CodeParams& p, const CodeParams& scale_code, const float* in,
                   std::uint8_t* out, CodeLayout layout, std::uint32_t* scale_codes, std::size_t len,
                   std::uint64_t first, const CastOptions& o);
// Its inverse: scale_values[k] is the decoded scale of block k (NaN: the block decodes to NaN).
void decode_blocks(const CodeParams& p, const float* table, SpanScale mode, std::size_t block,
                   const float* scale_values, float s_t, const std::uint8_t* codes, CodeLayout layout, float* out,
                   std::size_t len, bool stream);

// A row of column groups (column_layout.hpp): code i = encode_element(in[i] / c.divisor[i]) (the
// scales of ColumnScales, all finite), written to out in `layout`; element i has flat index first + i.
void encode_columns(const CodeParams& p, const ColumnScales& c, const float* in, std::uint8_t* out, CodeLayout layout,
                    std::size_t n, std::uint64_t first);
// A row of column groups (column_layout.hpp): out[i] = scaled_output(value of code i) with element
// i's decoded scale scale_values[i] (then s_t where two_level); codes read from `codes` in `layout`.
void decode_columns(const CodeParams& p, const float* table, const float* scale_values, bool two_level, float s_t,
                    const std::uint8_t* codes, CodeLayout layout, float* out, std::size_t n);

}  // namespace qcast::kernels
