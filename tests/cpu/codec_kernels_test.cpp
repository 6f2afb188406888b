// kernels::encode / kernels::decode produce the reference's bytes and values, on every compiled
// instruction set and thread count: every named format, the rounding and saturation options,
// strided (channel) groups, specials, and every fp16 bit pattern through the 16-bit entry points.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>

#include "common/cast_options.hpp"
#include "common/reference_errors.hpp"
#include "common/streaming.hpp"
#include "common/tensor_values.hpp"
#include "qcast/element_codec.hpp"
#include "qcast/format_names.hpp"
#include "qcast/kernels.hpp"
#include "qcast/packing.hpp"

namespace {

std::vector<float> codec_values(int rows, int cols, bool with_nan) {
  auto x = qcast_test::scaled_normal_rows(rows, cols, 34);  // not the seed of kernels_test: other values
  qcast_test::add_special_rows(x, cols, with_nan);
  return x;
}

// The first index where byte vectors differ (the shorter length where one is a prefix of the
// other), or -1: a failing check prints one number instead of both vectors.
long first_difference(const std::vector<std::uint8_t>& a, const std::vector<std::uint8_t>& b) {
  const auto [ia, ib] = std::mismatch(a.begin(), a.end(), b.begin(), b.end());
  return ia == a.end() && ib == b.end() ? -1 : long(ia - a.begin());
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 4) == 0;
}

// kernels::encode (into a fresh result, and into `reused` where given) and kernels::decode on 1, 2
// and 3 threads against the reference's bytes and values; the caller INFOs what is checked.
void check_codec_against_reference(const std::vector<float>& x, const qcast::Shape& shape, const qcast::Format& f,
                                   const qcast::CastOptions& o, qcast::Encoded* reused = nullptr) {
  const qcast::Encoded ref = qcast::encode(x.data(), shape, f, o);
  std::vector<float> ref_out(x.size());
  qcast::decode(ref, ref_out.data());
  for (int threads : {1, 2, 3}) {
    INFO("threads " << threads);
    const qcast::Encoded got = qcast::kernels::encode(x.data(), shape, f, o, threads);
    CHECK(first_difference(got.codes, ref.codes) == -1);
    CHECK(first_difference(got.scales, ref.scales) == -1);
    CHECK(std::memcmp(&got.tensor_scale, &ref.tensor_scale, 4) == 0);
    if (reused) {  // nothing of an earlier result may remain
      qcast::kernels::encode_into(*reused, x.data(), shape, f, o, threads);
      CHECK(first_difference(reused->codes, ref.codes) == -1);
      CHECK(first_difference(reused->scales, ref.scales) == -1);
      CHECK(std::memcmp(&reused->tensor_scale, &ref.tensor_scale, 4) == 0);
      CHECK(reused->shape == ref.shape);
    }
    std::vector<float> out(x.size());
    qcast::kernels::decode(ref, out.data(), threads);
    CHECK(same_bits(out, ref_out));
  }
}

}  // namespace

TEST_CASE("kernels::encode and decode equal the reference on every target, format, option and thread count") {
  const int rows = 64, cols = 1000;  // 1000 % 32 = 8: every line ends in a partial block
  std::vector<qcast::CastOptions> options(4);
  options[1].rounding = qcast::Rounding::stochastic;
  options[1].seed = 0xFEDCBA987ull;
  options[2].rounding = qcast::Rounding::toward_zero;
  options[3].saturate = false;
  std::vector<std::string> names;
  for (const auto& n : qcast::named_formats()) names.push_back(n.name);
  for (const char* extra : {"fp8_e4m3@channel", "int4@g128:axis=0", "fp4_e2m1@g32:scale=e8m0:rule=rceil",
                            "fp4_e2m1@g16:scale=ue4m3", "e3m4fnuzb5", "int8@channel:axis=0", "uint8", "e8m0"})
    names.push_back(extra);
  for (const auto& target : qcast::kernels::available_targets()) {
    qcast::kernels::use_target(target);
    for (const auto& name : names) {
      const qcast::Format f = qcast::parse_format(name);
      // A direct cast to a format without NaN cannot encode a NaN input (tested below).
      const auto x = codec_values(rows, cols, f.is_scaled() || f.element.has_nan());
      for (std::size_t k = 0; k < options.size(); ++k) {
        INFO(target << " " << name << " options#" << k);
        check_codec_against_reference(x, {rows, cols}, f, options[k]);
      }
    }
  }
  qcast::kernels::use_target("");
}

TEST_CASE("kernels::encode and decode equal the reference on lines longer than a chunk and lines of odd length") {
  // 9000 codes a line: several chunks per line, the last with a partial block; channels own whole
  // bytes. 1003: lines start off a byte boundary (encode takes its path for groups that share a byte;
  // decode reads from the byte before). Over
  // 196608 elements each, so that 3 threads each get a share (kMinElementsPerThread).
  std::vector<qcast::CastOptions> options(2);
  options[1].rounding = qcast::Rounding::stochastic;
  options[1].seed = 77;
  qcast::Encoded reused;  // encode_into across formats and sizes: nothing of an earlier result may remain
  for (const auto& target : qcast::kernels::available_targets()) {
    qcast::kernels::use_target(target);
    for (const auto [rows, cols] : {std::pair<int, int>{24, 9000}, {200, 1003}}) {
      for (const char* name : {"mxfp4", "nvfp4", "mxfp6_e2m3", "mxfp8_e5m2", "mxint8", "int4@g128", "int8@channel",
                               "int4@channel", "fp6_e3m2@channel", "fp8_e4m3", "fp4_e2m1@g48:scale=e8m0"}) {
        const qcast::Format f = qcast::parse_format(name);
        const auto x = codec_values(rows, cols, f.is_scaled() || f.element.has_nan());
        for (const auto& o : options) {
          INFO(target << " " << name << " cols " << cols);
          check_codec_against_reference(x, {rows, cols}, f, o, &reused);
        }
      }
    }
  }
  qcast::kernels::use_target("");
}

TEST_CASE("kernels::encode and decode equal the reference on column groups (strided across rows)") {
  // Blocks along a non-last axis and channels along the last axis: encode and decode by column
  // bands. Rows of odd length put 4-bit and 6-bit rows off a byte boundary (encode: one byte per code,
  // packed after); rows of 8k elements start on bytes (encode: 4-bit codes straight into the stream,
  // 6-bit packed a row chunk at a time), in several column chunks per band. Columns hold a NaN, an
  // Inf, zeros, subnormals.
  struct Case {
    qcast::Shape shape;
    std::vector<const char*> formats;
  };
  const std::vector<Case> cases = {
      {{3, 70, 1100}, {"e2m1@g32:scale=e8m0:axis=1", "e2m1@g16+tensor:axis=1", "int4@g128:axis=1"}},
      {{300, 41}, {"e4m3@g32:scale=e8m0:axis=0", "e2m3@g32:scale=e8m0:axis=0", "int4@g64:axis=0",
                   "e2m1@g16+tensor:axis=0"}},
      {{500, 37}, {"int8@channel:axis=1", "e4m3@channel:axis=-1", "int4@channel:axis=1", "e3m2@channel:axis=1"}},
      {{4, 50, 33}, {"int8@channel:axis=2", "e5m2@g16:scale=e8m0:axis=1"}},
      {{256, 1104}, {"int4@g128:axis=0", "e2m3@g32:scale=e8m0:axis=0", "e2m1@g16+tensor:axis=0"}},
      {{600, 64}, {"int4@channel:axis=1", "e3m2@channel:axis=1", "int8@channel:axis=1"}},
  };
  std::vector<qcast::CastOptions> options(2);
  options[1].rounding = qcast::Rounding::stochastic;
  options[1].seed = 5;
  for (const auto& c : cases) {
    const std::int64_t cols = c.shape.back();
    std::int64_t n = 1;
    for (auto d : c.shape) n *= d;
    auto x = qcast_test::scaled_normal_rows(int(n / cols), int(cols), 93);
    for (std::int64_t r = 0; r < n / cols; ++r) {
      x[std::size_t(r * cols + 3)] = 0.0f;                   // a column of zeros
      x[std::size_t(r * cols + 9)] = 3e-39f * float(r % 5);  // of subnormals: a subnormal binary32 scale
    }
    x[std::size_t(11 * cols + 5)] = std::numeric_limits<float>::quiet_NaN();
    x[std::size_t(17 * cols + 7)] = -INFINITY;
    for (const auto& target : qcast::kernels::available_targets()) {
      qcast::kernels::use_target(target);
      for (const char* name : c.formats) {
        for (std::size_t k = 0; k < options.size(); ++k) {
          INFO(target << " " << name << " rank " << c.shape.size() << " options#" << k);
          check_codec_against_reference(x, c.shape, qcast::parse_format(name), options[k]);
        }
      }
    }
  }
  qcast::kernels::use_target("");
}

TEST_CASE("kernels::encode and decode equal the reference on shapes with dimensions of size 1 around the axis") {
  // Encoded as the shape without the unit dimensions (canonical_layout.hpp), the result must still
  // carry the shape and format as given; decode takes the given ones back.
  std::vector<qcast::CastOptions> options(2);
  options[1].rounding = qcast::Rounding::stochastic;
  options[1].seed = 12;
  for (const auto& c : qcast_test::unit_dim_cases(32)) {
    const qcast::Format f = qcast::parse_format(c.format);
    for (const auto& target : qcast::kernels::available_targets()) {
      qcast::kernels::use_target(target);
      for (std::size_t k = 0; k < options.size(); ++k) {
        INFO(target << " " << c.format << " shape rank " << c.shape.size() << " options#" << k);
        check_codec_against_reference(c.values, c.shape, f, options[k]);
        const qcast::Encoded got = qcast::kernels::encode(c.values.data(), c.shape, f, options[k], 2);
        CHECK(got.shape == c.shape);
        CHECK(got.format == f);
        std::vector<std::uint16_t> x16(c.values.size());
        std::vector<float> wide(c.values.size());
        for (std::size_t i = 0; i < x16.size(); ++i) {
          x16[i] = qcast::narrow(qcast::DType::f16, c.values[i]);
          wide[i] = qcast::widen(qcast::DType::f16, x16[i]);
        }
        const qcast::Encoded ref16 = qcast::encode(wide.data(), c.shape, f, options[k]);
        const qcast::Encoded got16 = qcast::kernels::encode(x16.data(), qcast::DType::f16, c.shape, f, options[k], 3);
        CHECK(first_difference(got16.codes, ref16.codes) == -1);
        CHECK(first_difference(got16.scales, ref16.scales) == -1);
        CHECK(got16.shape == c.shape);
        CHECK(got16.format == f);
      }
    }
  }
  qcast::kernels::use_target("");
}

TEST_CASE("kernels::encode and decode equal the reference on channels along a middle axis (contiguous runs)") {
  // Each channel is `outer` runs of `inner` elements, encoded and decoded a run at a time. Runs of 72
  // own whole bytes (encode writes 4-bit and 6-bit codes straight into the stream); runs of 37 share
  // bytes (one byte per code, packed after); runs of 9000 span several chunks; rank 4 (NCHW). A
  // NaN, an Inf and a zero channel; float32 and the 16-bit entry points.
  std::vector<qcast::CastOptions> options(2);
  options[1].rounding = qcast::Rounding::stochastic;
  options[1].seed = 11;
  for (const auto& c : qcast_test::channel_run_cases(98)) {
    const qcast::Shape& shape = c.shape;
    const std::int64_t inner = c.inner;
    const std::vector<float>& x = c.values;
    for (const auto& target : qcast::kernels::available_targets()) {
      qcast::kernels::use_target(target);
      for (const char* name : qcast_test::kChannelRunFormats) {
        const qcast::Format f = qcast::parse_format(name);
        for (std::size_t k = 0; k < options.size(); ++k) {
          INFO(target << " " << name << " inner " << inner << " options#" << k);
          check_codec_against_reference(x, shape, f, options[k]);
          for (qcast::DType t : {qcast::DType::bf16, qcast::DType::f16}) {
            std::vector<std::uint16_t> x16(x.size());
            std::vector<float> wide(x.size());
            for (std::size_t i = 0; i < x.size(); ++i) {
              x16[i] = qcast::narrow(t, x[i]);
              wide[i] = qcast::widen(t, x16[i]);
            }
            const qcast::Encoded ref = qcast::encode(wide.data(), shape, f, options[k]);
            const qcast::Encoded got = qcast::kernels::encode(x16.data(), t, shape, f, options[k], 3);
            INFO(qcast::dtype_name(t));
            CHECK(first_difference(got.codes, ref.codes) == -1);
            CHECK(first_difference(got.scales, ref.scales) == -1);
            std::vector<float> ref_out(x.size());
            qcast::decode(ref, ref_out.data());
            std::vector<std::uint16_t> out16(x.size());
            qcast::kernels::decode(ref, out16.data(), t, 3);
            std::size_t bad = 0;
            for (std::size_t i = 0; i < x.size(); ++i) bad += out16[i] != qcast::narrow(t, ref_out[i]);
            CHECK(bad == 0);
          }
        }
      }
    }
  }
  qcast::kernels::use_target("");
}

TEST_CASE("kernels::encode equals the reference where blocks of every kind follow each other in a line") {
  const int rows = 12, cols = 2168;  // more than a chunk of blocks, a partial last block; a whole number of bytes (encode_blocks)
  for (bool extremes : {false, true}) {
    for (int block : {16, 32}) {
      const auto x = qcast_test::mixed_block_rows(rows, cols, block, extremes, unsigned(block) + extremes);
      for (const auto& target : qcast::kernels::available_targets()) {
        qcast::kernels::use_target(target);
        for (const char* name : {"mxfp4", "mxfp6_e3m2", "mxfp8_e4m3", "mxint8", "nvfp4", "fp4_e2m1@g16:scale=ue4m3",
                                 "int4@g32"}) {
          INFO(target << " " << name << " block " << block << " extremes " << extremes);
          check_codec_against_reference(x, {rows, cols}, qcast::parse_format(name), {});
        }
      }
    }
  }
  qcast::kernels::use_target("");
}

TEST_CASE("kernels::decode with streaming stores, on aligned and unaligned outputs") {
  const int rows = 12, cols = 2168;
  const auto x = qcast_test::mixed_block_rows(rows, cols, 32, true, 3);
  const std::size_t n = x.size();
  const qcast_test::AlignedFloats buffer(n + 16);
  const qcast_test::StreamEveryOutput stream_all;
  for (const auto& target : qcast::kernels::available_targets()) {
    qcast::kernels::use_target(target);
    for (const char* name : {"fp8_e4m3", "int8", "mxfp4", "nvfp4", "int4@g128"}) {
      const qcast::Encoded enc = qcast::encode(x.data(), {rows, cols}, qcast::parse_format(name));
      std::vector<float> ref(n);
      qcast::decode(enc, ref.data());
      for (std::size_t offset : {0, 1}) {
        float* got = buffer.get() + offset;
        qcast::kernels::decode(enc, got, 3);
        INFO(target << " " << name << " offset " << offset);
        CHECK(std::memcmp(got, ref.data(), n * 4) == 0);
      }
    }
  }
  qcast::kernels::use_target("");
}

TEST_CASE("kernels::encode / decode on every fp16 bit pattern through the 16-bit entry points") {
  std::vector<std::uint16_t> in(65536);
  std::vector<float> wide(65536);
  for (std::uint32_t c = 0; c < 65536; ++c) {
    in[c] = std::uint16_t(c);
    wide[c] = qcast::widen(qcast::DType::f16, std::uint16_t(c));
  }
  for (const auto& target : qcast::kernels::available_targets()) {
    qcast::kernels::use_target(target);
    for (const char* name : {"fp8_e4m3", "fp8_e5m2", "fp8_e4m3fnuz", "mxfp8_e4m3", "mxfp6_e3m2", "mxfp4", "nvfp4",
                             "mxint8", "int4@g128", "int8@channel"}) {
      INFO(target << " " << name);
      const auto f = qcast::parse_format(name);
      const qcast::Encoded ref = qcast::encode(wide.data(), {256, 256}, f);
      const qcast::Encoded got = qcast::kernels::encode(in.data(), qcast::DType::f16, {256, 256}, f, {}, 2);
      CHECK(first_difference(got.codes, ref.codes) == -1);
      CHECK(first_difference(got.scales, ref.scales) == -1);
      std::vector<float> ref_out(in.size());
      qcast::decode(ref, ref_out.data());
      for (qcast::DType t : {qcast::DType::f16, qcast::DType::bf16}) {
        std::vector<std::uint16_t> out(in.size());
        qcast::kernels::decode(ref, out.data(), t, 2);
        std::size_t bad = 0;
        for (std::size_t i = 0; i < in.size(); ++i) bad += out[i] != qcast::narrow(t, ref_out[i]);
        CHECK(bad == 0);
      }
    }
  }
  qcast::kernels::use_target("");
}

namespace {

// Every non-negative finite value of element format e, its midpoints with the next one (the ties)
// and the binary32 neighbours of both, up to `limit` (values beyond it left out); then the same
// negated. Where beyond_max, also values past the largest one, up to FLT_MAX and Inf.
std::vector<float> grid_ties_and_neighbours(const qcast::ElementFormat& e, float limit, bool beyond_max) {
  std::vector<float> grid;
  for (std::uint32_t c = 0; c < (1u << e.bits()); ++c) {
    const float g = qcast::decode_element(e, c);
    if (std::isfinite(g) && g >= 0 && !std::signbit(g)) grid.push_back(g);
  }
  std::sort(grid.begin(), grid.end());
  grid.erase(std::unique(grid.begin(), grid.end()), grid.end());
  std::vector<float> v;
  auto add_with_neighbours = [&](float x) {
    for (float y : {std::nextafter(x, 0.0f), x, std::nextafter(x, INFINITY)})
      if (y <= limit) v.push_back(y);
  };
  for (std::size_t i = 0; i < grid.size(); ++i) {
    add_with_neighbours(grid[i]);
    if (i + 1 < grid.size()) add_with_neighbours(grid[i] + (grid[i + 1] - grid[i]) / 2);  // exact in binary32
  }
  v.push_back(std::numeric_limits<float>::denorm_min());
  v.push_back(std::numeric_limits<float>::min());
  if (beyond_max) {
    const float max = grid.back(), step = max - grid[grid.size() - 2];
    for (float y : {max + step / 2, max + step, 2 * max, 1e30f, std::numeric_limits<float>::max(), INFINITY})
      add_with_neighbours(y), v.push_back(y);
  }
  const std::size_t positive = v.size();
  for (std::size_t i = 0; i < positive; ++i) v.push_back(-v[i]);
  return v;
}

void check_decode_against_reference(const qcast::Encoded& e) {
  std::vector<float> ref(std::size_t(e.shape[0]) * (e.shape.size() > 1 ? std::size_t(e.shape[1]) : 1));
  std::vector<float> got(ref.size());
  qcast::decode(e, ref.data());
  qcast::kernels::decode(e, got.data(), 2);
  CHECK(same_bits(got, ref));
}

}  // namespace

TEST_CASE("kernels::encode and decode equal the reference on every grid value, tie and neighbour of each element format") {
  for (const auto& target : qcast::kernels::available_targets()) {
    qcast::kernels::use_target(target);
    // Value casts: the element grid itself, with overflow, Inf and (where the format has a NaN
    // code) NaN; every rounding mode, saturating and not. The neighbours of a tie are where a
    // rounding shortcut goes wrong: r = 0.5 - 2^-25 (below the first tie, in units of the grid step)
    // made r + 0.5 round up to 1 in binary32, so Floor(r + 0.5) rounded it away from zero.
    for (const char* name : {"fp8_e4m3", "fp8_e5m2", "fp8_e4m3fnuz", "fp6_e2m3", "fp6_e3m2", "fp4_e2m1"}) {
      const qcast::Format f = qcast::parse_format(name);
      std::vector<float> x = grid_ties_and_neighbours(f.element, INFINITY, true);
      if (f.element.has_nan()) x.push_back(std::numeric_limits<float>::quiet_NaN());
      const qcast::Shape shape{std::int64_t(x.size())};
      for (const qcast::CastOptions& o : qcast_test::rounding_and_overflow_options()) {
        INFO(target << " " << name << " rounding " << int(o.rounding) << " saturate " << o.saturate.value_or(true));
        const qcast::Encoded ref = qcast::encode(x.data(), shape, f, o);
        CHECK(first_difference(qcast::kernels::encode(x.data(), shape, f, o, 2).codes, ref.codes) == -1);
        check_decode_against_reference(ref);  // every code of the format, NaN and Inf codes included
        std::vector<float> cast_ref(x.size()), cast_got(x.size());
        qcast::cast(x.data(), cast_ref.data(), shape, f, o);
        qcast::kernels::cast(x.data(), cast_got.data(), shape, f, o, 2);
        CHECK(same_bits(cast_got, cast_ref));
      }
    }
    // Block formats whose scale is exactly 1: each block opens with the largest element value, and
    // its other elements are the grid's values, ties and neighbours.
    for (const char* name : {"mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e2m3", "mxfp6_e3m2", "mxfp4", "mxint8", "int4@g32",
                             "int8@g32"}) {
      const qcast::Format f = qcast::parse_format(name);
      const float max = float(f.element.max_value());
      const std::vector<float> values = grid_ties_and_neighbours(f.element, max, false);
      const std::size_t per_block = std::size_t(f.block_size) - 1;
      const std::size_t blocks = (values.size() + per_block - 1) / per_block;
      const std::size_t cols = 8 * std::size_t(f.block_size);
      const std::size_t rows = (blocks + 7) / 8;
      std::vector<float> x(rows * cols, 0.0f);
      for (std::size_t b = 0; b < rows * 8; ++b) {
        x[b * f.block_size] = b % 2 ? -max : max;
        for (std::size_t i = 0; i < per_block && b * per_block + i < values.size(); ++i)
          x[b * f.block_size + 1 + i] = values[b * per_block + i];
      }
      INFO(target << " " << name);
      const qcast::Shape shape{std::int64_t(rows), std::int64_t(cols)};
      const qcast::Encoded ref = qcast::encode(x.data(), shape, f);
      std::size_t scales_not_one = 0;  // what the values were built for
      for (std::size_t b = 0; b < rows * 8; ++b)
        scales_not_one += qcast::group_scale_from_code(f, qcast::unpack_code(ref.scales.data(), b, f.scale_storage_bits())).value != 1.0f;
      REQUIRE(scales_not_one == 0);
      const qcast::Encoded got = qcast::kernels::encode(x.data(), shape, f, {}, 2);
      CHECK(first_difference(got.codes, ref.codes) == -1);
      CHECK(first_difference(got.scales, ref.scales) == -1);
      check_decode_against_reference(ref);
    }
  }
  qcast::kernels::use_target("");
}

TEST_CASE("kernels::decode to 16-bit tensors equals the reference narrowed, on lines longer than a chunk") {
  // Decode to bfloat16 / float16 a chunk at a time (value casts, one scale, lines of blocks, channels),
  // strided groups an element at a time, with NaN and zero groups among them.
  auto x = codec_values(37, 5000, true);
  for (const char* name : {"fp8_e4m3", "fp6_e3m2", "int8", "int4", "mxfp4", "mxfp6_e2m3", "nvfp4", "int4@g128",
                           "mxint8", "int8@channel", "int8@channel:axis=0", "int4@g128:axis=0"}) {
    const auto f = qcast::parse_format(name);
    std::vector<float> finite = x;  // value casts to formats without NaN, and integers, take finite data
    for (auto& v : finite)
      if (std::isnan(v)) v = 1.0f;
    const std::vector<float>& in = f.element.has_nan() || f.is_scaled() ? x : finite;
    const qcast::Encoded ref = qcast::encode(in.data(), {37, 5000}, f);
    std::vector<float> ref_out(in.size());
    qcast::decode(ref, ref_out.data());
    for (qcast::DType t : {qcast::DType::bf16, qcast::DType::f16}) {
      for (int threads : {1, 2, 3}) {
        std::vector<std::uint16_t> out(in.size());
        qcast::kernels::decode(ref, out.data(), t, threads);
        std::size_t bad = 0;
        for (std::size_t i = 0; i < in.size(); ++i) bad += out[i] != qcast::narrow(t, ref_out[i]);
        INFO(name << " " << qcast::dtype_name(t) << " threads " << threads);
        CHECK(bad == 0);
      }
    }
  }
}

TEST_CASE("kernels::encode of 16-bit tensors equals the reference on the widened values, a chunk at a time") {
  // Encode from bfloat16 / float16 widens a chunk at a time (value casts, one scale, lines of blocks,
  // contiguous groups, rows of column groups), other strided groups an element at a time. Lines longer than a chunk, of odd
  // length (the any-layout path), NaN and zero groups, stochastic and non-saturating options,
  // encode_into a reused result, on every target.
  std::vector<qcast::CastOptions> options(3);
  options[1].rounding = qcast::Rounding::stochastic;
  options[1].seed = 0xABCDEFull;
  options[2].saturate = false;
  qcast::Encoded reused;
  for (const auto [rows, cols] : {std::pair<int, int>{37, 5000}, {200, 1003}}) {
    const auto x = codec_values(rows, cols, true);
    for (qcast::DType t : {qcast::DType::bf16, qcast::DType::f16}) {
      std::vector<std::uint16_t> x16(x.size());
      std::vector<float> wide(x.size()), finite_wide(x.size());
      std::vector<std::uint16_t> finite16(x.size());
      for (std::size_t i = 0; i < x.size(); ++i) {
        x16[i] = qcast::narrow(t, x[i]);
        wide[i] = qcast::widen(t, x16[i]);
        finite16[i] = std::isnan(wide[i]) ? qcast::narrow(t, 1.0f) : x16[i];
        finite_wide[i] = qcast::widen(t, finite16[i]);
      }
      for (const char* name : {"fp8_e4m3", "fp6_e3m2", "int8", "int4", "mxfp4", "mxfp6_e2m3", "nvfp4", "int4@g128",
                               "mxint8", "int8@channel", "int4@channel", "fp8_e4m3@channel", "int4@g128:axis=0",
                               "int8@channel:axis=0", "e3m2@g32:scale=e8m0:axis=0", "fp6_e2m3@channel:axis=1"}) {
        const auto f = qcast::parse_format(name);
        // Value casts to formats without NaN take finite data.
        const bool nan_ok = f.element.has_nan() || f.is_scaled();
        const std::vector<std::uint16_t>& in16 = nan_ok ? x16 : finite16;
        const std::vector<float>& in = nan_ok ? wide : finite_wide;
        for (std::size_t k = 0; k < options.size(); ++k) {
          const qcast::Encoded ref = qcast::encode(in.data(), {rows, cols}, f, options[k]);
          for (const auto& target : qcast::kernels::available_targets()) {
            qcast::kernels::use_target(target);
            for (int threads : {1, 2, 3}) {
              INFO(target << " " << name << " " << qcast::dtype_name(t) << " cols " << cols << " options#" << k
                          << " threads " << threads);
              const qcast::Encoded got = qcast::kernels::encode(in16.data(), t, {rows, cols}, f, options[k], threads);
              CHECK(first_difference(got.codes, ref.codes) == -1);
              CHECK(first_difference(got.scales, ref.scales) == -1);
              CHECK(std::memcmp(&got.tensor_scale, &ref.tensor_scale, 4) == 0);
              qcast::kernels::encode_into(reused, in16.data(), t, {rows, cols}, f, options[k], threads);
              CHECK(first_difference(reused.codes, ref.codes) == -1);
              CHECK(first_difference(reused.scales, ref.scales) == -1);
            }
          }
        }
      }
    }
  }
  qcast::kernels::use_target("");
}

TEST_CASE("kernels::encode of a 16-bit tensor reports the first NaN of a direct cast as the reference") {
  std::vector<float> x(100000, 1.0f);
  x[77777] = NAN;
  x[91234] = NAN;
  std::vector<std::uint16_t> x16(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) x16[i] = qcast::narrow(qcast::DType::bf16, x[i]);
  const auto f = qcast::parse_format("fp4_e2m1");
  const std::string ref_what = qcast_test::reference_encode_error(x, {100000}, f);
  REQUIRE(!ref_what.empty());
  CHECK_THROWS_WITH(qcast::kernels::encode(x16.data(), qcast::DType::bf16, {100000}, f, {}, 2), ref_what);
}

TEST_CASE("kernels::encode reports the first NaN of a direct cast to a format without NaN, as the reference") {
  std::vector<float> x(100000, 1.0f);
  x[77777] = NAN;
  x[91234] = NAN;
  for (const char* name : {"fp4_e2m1", "fp6_e3m2", "fp6_e2m3"}) {
    const auto f = qcast::parse_format(name);
    const std::string ref_what = qcast_test::reference_encode_error(x, {100000}, f);
    REQUIRE(!ref_what.empty());
    CHECK_THROWS_WITH(qcast::kernels::encode(x.data(), {100000}, f, {}, 2), ref_what);
  }
}

TEST_CASE("kernels::encode equals the reference for tiny tensors under two-level formats, with no NaN") {
  // Binary32 or bfloat16 block scales over elements of max <= 1 put amax_t / (max_elem * max_scale)
  // far below 2^-128 for a tensor of small values; s_t is floored at 2^-128 (the recipe's encode
  // scale clamped to FLT_MAX), so no block's s * s_t is 0 and an element that is exactly 0 is 0,
  // not 0 / 0. Kernels and reference must agree on every code, and nothing finite becomes NaN.
  std::vector<float> x(4096);
  std::mt19937 rng(57);
  std::normal_distribution<float> normal;
  for (auto& v : x) v = normal(rng) * 1e-9f;
  x[100] = 0.0f;
  for (int i = 512; i < 528; ++i) x[std::size_t(i)] = 0.0f;  // a whole block of zeros
  const qcast::Shape shape{16, 256};
  for (const auto& target : qcast::kernels::available_targets()) {
    qcast::kernels::use_target(target);
    for (const char* name : {"int8f7@g16+tensor:scale=fp32", "e2m1nospb4@g32+tensor:scale=bf16",
                             "e4m3fnb16@g16+tensor:scale=fp32", "nvfp4"}) {
      const auto f = qcast::parse_format(name);
      INFO(target << " " << name);
      REQUIRE(qcast_test::reference_encode_error(x, shape, f).empty());
      const qcast::Encoded ref = qcast::encode(x.data(), shape, f);
      const qcast::Encoded got = qcast::kernels::encode(x.data(), shape, f, {}, 2);
      CHECK(first_difference(got.codes, ref.codes) == -1);
      CHECK(first_difference(got.scales, ref.scales) == -1);
      std::vector<float> y(x.size());
      qcast::kernels::cast(x.data(), y.data(), shape, f, {}, 2);
      std::size_t nans = 0;
      for (float v : y) nans += std::isnan(v);
      CHECK(nans == 0);
      CHECK(y[100] == 0.0f);
    }
  }
  qcast::kernels::use_target("");
}

TEST_CASE("kernels equal the reference where a binary32 block scale d = (amax / max) / s_t overflows") {
  // With binary32 block scales (over elements of max <= 1, as wider ones are rejected),
  // s_t = amax_t / (max_elem * FLT_MAX) is subnormal for a tensor of small values, and a block's d = (amax / max_elem) / s_t can exceed FLT_MAX. The reference
  // encodes d with saturation, so the scale is FLT_MAX, not Inf (q * Inf would be NaN, or 0 * Inf).
  // Tensors over binades 2^-30 .. 2^-14 put s_t, by format, at a few ulps of the smallest
  // subnormal or at 0 (then a block of amax 0 has d = 0 / 0: a NaN scale, as group_scale gives).
  std::mt19937 rng(59);
  std::normal_distribution<float> normal;
  std::vector<qcast::CastOptions> options(3);
  options[1].rounding = qcast::Rounding::stochastic;  // the general block path
  options[1].seed = 11;
  options[2].rounding = qcast::Rounding::toward_zero;
  const qcast::Shape shape{8, 96};
  for (const auto& target : qcast::kernels::available_targets()) {
    qcast::kernels::use_target(target);
    for (int e : {-30, -26, -23, -21, -20, -18, -14}) {
      std::vector<float> x(8 * 96);
      for (auto& v : x) v = std::ldexp(normal(rng), e);
      for (const char* name : {"int2@g32+tensor:scale=fp32", "int8f7@g16+tensor:scale=fp32", "e2m1nospb4@g16+tensor:scale=fp32",
                               "e4m3fnb16@g32+tensor:scale=fp32"}) {
        const auto f = qcast::parse_format(name);
        for (std::size_t k = 0; k < options.size(); ++k) {
          INFO(target << " " << name << " 2^" << e << " options#" << k);
          std::vector<float> ref(x.size()), got(x.size());
          qcast::cast(x.data(), ref.data(), shape, f, options[k]);
          qcast::kernels::cast(x.data(), got.data(), shape, f, options[k], 2);
          CHECK(same_bits(got, ref));
          std::string ref_what;
          qcast::Encoded ref_codes;
          try {
            ref_codes = qcast::encode(x.data(), shape, f, options[k]);
          } catch (const std::exception& error) {
            ref_what = error.what();
          }
          if (!ref_what.empty()) {
            CHECK_THROWS_WITH(qcast::kernels::encode(x.data(), shape, f, options[k], 2), ref_what);
          } else {
            const qcast::Encoded got_codes = qcast::kernels::encode(x.data(), shape, f, options[k], 2);
            CHECK(first_difference(got_codes.codes, ref_codes.codes) == -1);
            CHECK(first_difference(got_codes.scales, ref_codes.scales) == -1);
          }
        }
      }
    }
  }
  qcast::kernels::use_target("");
}

TEST_CASE("kernels::encode of 4-bit column groups with a NaN column leaves the neighbouring codes alone") {
  // Blocks along axis 0 in rows of 792 elements (a multiple of 8: codes go straight into the
  // stream). Column 12 holds a NaN; under the rounding modes that quantize before coding, its lane's
  // code came out wider than 4 bits and spilled into column 13's nibble before column 12 was patched.
  std::vector<float> x(2 * 792);
  std::mt19937 rng(58);
  std::normal_distribution<float> normal;
  for (auto& v : x) v = normal(rng);
  x[12] = NAN;
  x[792 + 500] = -NAN;
  std::vector<qcast::CastOptions> options(3);
  options[1].rounding = qcast::Rounding::toward_zero;
  options[2].rounding = qcast::Rounding::stochastic;
  options[2].seed = 5;
  for (const auto& target : qcast::kernels::available_targets()) {
    qcast::kernels::use_target(target);
    for (const char* name : {"fp4_e2m1@g32:scale=e8m0:axis=0", "int4@g32:axis=0"}) {
      const auto f = qcast::parse_format(name);
      for (std::size_t k = 0; k < options.size(); ++k) {
        INFO(target << " " << name << " options#" << k);
        check_codec_against_reference(x, {2, 792}, f, options[k]);
      }
    }
  }
  qcast::kernels::use_target("");
}

TEST_CASE("kernels::decode rejects short code buffers as the reference does") {
  const auto f = qcast::parse_format("mxfp4");
  std::vector<float> x(256, 0.5f), out(256);
  qcast::Encoded e = qcast::kernels::encode(x.data(), {256}, f);
  e.codes.resize(e.codes.size() - 1);
  CHECK_THROWS_AS(qcast::kernels::decode(e, out.data()), std::invalid_argument);
}

TEST_CASE("kernels::encode / decode of one-scale (per-tensor) formats on finite data, split over threads") {
  std::mt19937 rng(56);
  std::normal_distribution<float> normal;
  std::vector<float> x(300001);  // odd: the last byte of 4-bit codes is half full
  for (auto& v : x) v = normal(rng);
  for (const auto& target : qcast::kernels::available_targets()) {
    qcast::kernels::use_target(target);
    for (const char* name : {"int8", "int4", "int3", "int6"}) {
      const auto f = qcast::parse_format(name);
      const qcast::Encoded ref = qcast::encode(x.data(), {300001}, f);
      std::vector<float> ref_out(x.size()), out(x.size());
      qcast::decode(ref, ref_out.data());
      for (int threads : {1, 2, 4}) {
        INFO(target << " " << name << " threads " << threads);
        const qcast::Encoded got = qcast::kernels::encode(x.data(), {300001}, f, {}, threads);
        CHECK(first_difference(got.codes, ref.codes) == -1);
        CHECK(first_difference(got.scales, ref.scales) == -1);
        // Into a result whose bytes all hold ones: the unused half of the last byte must be cleared too.
        qcast::Encoded reused = got;
        std::fill(reused.codes.begin(), reused.codes.end(), std::uint8_t{0xFF});
        qcast::kernels::encode_into(reused, x.data(), {300001}, f, {}, threads);
        CHECK(first_difference(reused.codes, ref.codes) == -1);
        qcast::kernels::decode(ref, out.data(), threads);
        CHECK(same_bits(out, ref_out));
      }
    }
  }
  qcast::kernels::use_target("");
}
