// qcast::cuda::cast / encode / decode give the reference's bits (qcast::cast, encode, decode) for
// every named format and more, every rounding and overflow option, float32 / float16 / bfloat16,
// the fused block path (lines of whole blocks) and the group path (partial blocks, channels, other
// axes, misaligned pointers), and tensors large enough that every kernel loops over its grid.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "common/cast_options.hpp"
#include "common/differing.hpp"
#include "common/reference_errors.hpp"
#include "common/tensor_values.hpp"
#include "device_buffer.hpp"
#include "qcast/cuda.hpp"
#include "qcast/kernels.hpp"

using qcast_test::DeviceBuffer;
using qcast_test::differing;

namespace {

std::vector<float> gpu_values(int rows, int cols, bool with_nan) {
  auto x = qcast_test::scaled_normal_rows(rows, cols, 78);
  qcast_test::add_special_rows(x, cols, with_nan);
  for (int c = 0; c < cols; ++c) x[std::size_t(8) * cols + c] = std::ldexp(1.0f, 127 - c % 8) * 1.5f;  // near FLT_MAX
  return x;
}

std::vector<std::string> test_format_names() {
  std::vector<std::string> names;
  for (const auto& n : qcast::named_formats()) names.push_back(n.name);
  for (const char* extra :
       {"fp8_e4m3@channel", "int8@channel:axis=0", "int4@g128:axis=0", "fp4_e2m1@g32:scale=e8m0:axis=0", "fp4_e2m1@g16+tensor:scale=ue4m3:axis=0",
        "fp4_e2m1@g32:scale=e8m0:rule=rceil", "fp4_e2m1@g32:scale=e8m0:rule=ceil", "e3m2@g32:scale=e8m0:rule=even",
        "fp4_e2m1@g16:scale=ue4m3", "fp4_e2m1@g24:scale=e8m0", "fp8_e5m2@g64:scale=bf16", "fp8_e4m3@tensor",
        "int4@g8", "e3m4fnuzb5", "uint8", "e8m0", "bf16", "fp16", "e2m5@g128:scale=fp16"})
    names.push_back(extra);
  return names;
}

std::vector<std::uint16_t> narrowed(qcast::DType t, const std::vector<float>& x) {
  std::vector<std::uint16_t> h(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) h[i] = qcast::narrow(t, x[i]);
  return h;
}

}  // namespace

TEST_CASE("cuda::cast equals the reference for every format and option, on whole and partial blocks") {
  const auto options = qcast_test::rounding_and_overflow_options();
  // 1024 columns: lines of whole blocks (the fused path); 1000: partial blocks (the group path).
  for (const int cols : {1024, 1000}) {
    const int rows = 40;
    const qcast::Shape shape{rows, cols};
    const auto x = gpu_values(rows, cols, true);
    const DeviceBuffer<float> in(x);
    DeviceBuffer<float> out(x.size());
    for (const auto& name : test_format_names()) {
      const qcast::Format f = qcast::parse_format(name);
      for (std::size_t k = 0; k < options.size(); ++k) {
        INFO(name << " cols " << cols << " options#" << k);
        std::vector<float> ref(x.size());
        qcast::cast(x.data(), ref.data(), shape, f, options[k]);
        qcast::cuda::cast(in.get(), out.get(), qcast::DType::f32, shape, f, options[k]);
        CHECK(differing(out.to_host(), ref) == 0);
      }
    }
  }
}

TEST_CASE("cuda::cast of float16 and bfloat16 tensors equals the reference's 16-bit cast") {
  const int rows = 24, cols = 512;
  const qcast::Shape shape{rows, cols};
  const auto x = gpu_values(rows, cols, true);
  std::vector<qcast::CastOptions> options(2);
  options[1].rounding = qcast::Rounding::stochastic;
  options[1].seed = 5;
  for (const qcast::DType t : {qcast::DType::f16, qcast::DType::bf16}) {
    const auto x16 = narrowed(t, x);
    const DeviceBuffer<std::uint16_t> in(x16);
    DeviceBuffer<std::uint16_t> out(x16.size());
    for (const auto& name : test_format_names()) {
      const qcast::Format f = qcast::parse_format(name);
      for (std::size_t k = 0; k < options.size(); ++k) {
        INFO(qcast::dtype_name(t) << " " << name << " options#" << k);
        std::vector<std::uint16_t> ref(x16.size());
        qcast::cast(x16.data(), ref.data(), t, shape, f, options[k]);
        qcast::cuda::cast(in.get(), out.get(), t, shape, f, options[k]);
        CHECK(differing(out.to_host(), ref) == 0);
      }
    }
  }
}

TEST_CASE("cuda::cast on every fp16 bit pattern") {
  std::vector<std::uint16_t> all(65536);
  for (std::uint32_t c = 0; c < 65536; ++c) all[c] = std::uint16_t(c);
  const DeviceBuffer<std::uint16_t> in(all);
  DeviceBuffer<std::uint16_t> out(all.size());
  for (const char* name : {"fp8_e4m3", "fp8_e5m2", "fp8_e4m3fnuz", "fp6_e2m3", "fp4_e2m1", "mxfp8_e4m3", "mxfp4",
                           "nvfp4", "mxint8", "int4@g128", "int8@channel", "bf16"}) {
    INFO(name);
    const auto f = qcast::parse_format(name);
    std::vector<std::uint16_t> ref(all.size());
    qcast::cast(all.data(), ref.data(), qcast::DType::f16, {256, 256}, f);
    qcast::cuda::cast(in.get(), out.get(), qcast::DType::f16, {256, 256}, f);
    CHECK(differing(out.to_host(), ref) == 0);
  }
}

TEST_CASE("cuda::cast in place and from misaligned pointers; decode into misaligned pointers") {
  const int rows = 16, cols = 256;
  const auto x = gpu_values(rows, cols, true);
  for (const char* name : {"mxfp4", "nvfp4", "fp8_e4m3", "int4@g128"}) {
    INFO(name);
    const auto f = qcast::parse_format(name);
    std::vector<float> ref(x.size());
    qcast::cast(x.data(), ref.data(), {rows, cols}, f);
    DeviceBuffer<float> inplace(x);
    qcast::cuda::cast(inplace.get(), inplace.get(), qcast::DType::f32, {rows, cols}, f);
    CHECK(differing(inplace.to_host(), ref) == 0);
    // One float past a 16-byte boundary: the kernels must not use vector accesses there.
    std::vector<float> padded(x.size() + 1, 0.0f);
    std::copy(x.begin(), x.end(), padded.begin() + 1);
    const DeviceBuffer<float> in(padded);
    DeviceBuffer<float> out(padded.size());
    qcast::cuda::cast(in.get() + 1, out.get() + 1, qcast::DType::f32, {rows, cols}, f);
    const auto got = out.to_host();
    CHECK(differing(std::vector<float>(got.begin() + 1, got.end()), ref) == 0);
    // Decoding into a misaligned output: no vector stores there either.
    const qcast::Encoded e = qcast::encode(x.data(), {rows, cols}, f);
    std::vector<float> ref_decoded(x.size());
    qcast::decode(e, ref_decoded.data());
    const DeviceBuffer<std::uint8_t> codes(e.codes), scales(e.scales);
    qcast::cuda::decode(codes.get(), scales.get(), e.tensor_scale, {rows, cols}, f, out.get() + 1, qcast::DType::f32);
    const auto decoded = out.to_host();
    CHECK(differing(std::vector<float>(decoded.begin() + 1, decoded.end()), ref_decoded) == 0);
  }
}

TEST_CASE("cuda::encode and decode give the reference's bytes and values") {
  std::vector<qcast::CastOptions> options(4);
  options[1].rounding = qcast::Rounding::stochastic;
  options[1].seed = 0xFEDCBA987ull;
  options[2].rounding = qcast::Rounding::toward_zero;
  options[3].saturate = false;
  for (const int cols : {1024, 1000}) {
    const int rows = 40;
    const qcast::Shape shape{rows, cols};
    for (const auto& name : test_format_names()) {
      const qcast::Format f = qcast::parse_format(name);
      const auto x = gpu_values(rows, cols, f.is_scaled() || f.element.has_nan());
      const DeviceBuffer<float> in(x);
      for (std::size_t k = 0; k < options.size(); ++k) {
        INFO(name << " cols " << cols << " options#" << k);
        const qcast::Encoded ref = qcast::encode(x.data(), shape, f, options[k]);
        DeviceBuffer<std::uint8_t> codes(ref.codes.size()), scales(ref.scales.size());
        const float s_t = qcast::cuda::encode(in.get(), qcast::DType::f32, shape, f, codes.get(), scales.get(), options[k]);
        CHECK(codes.to_host() == ref.codes);
        CHECK(scales.to_host() == ref.scales);
        CHECK(std::memcmp(&s_t, &ref.tensor_scale, 4) == 0);
        std::vector<float> ref_out(x.size());
        qcast::decode(ref, ref_out.data());
        const DeviceBuffer<std::uint8_t> ref_codes(ref.codes), ref_scales(ref.scales);
        DeviceBuffer<float> out(x.size());
        qcast::cuda::decode(ref_codes.get(), ref_scales.get(), ref.tensor_scale, shape, f, out.get(), qcast::DType::f32);
        CHECK(differing(out.to_host(), ref_out) == 0);
        for (const qcast::DType t : {qcast::DType::f16, qcast::DType::bf16}) {
          DeviceBuffer<std::uint16_t> out16(x.size());
          qcast::cuda::decode(ref_codes.get(), ref_scales.get(), ref.tensor_scale, shape, f, out16.get(), t);
          CHECK(differing(out16.to_host(), narrowed(t, ref_out)) == 0);
        }
      }
    }
  }
}

TEST_CASE("cuda::encode of float16 and bfloat16 tensors equals the reference on the widened values") {
  const int rows = 24, cols = 512;
  const qcast::Shape shape{rows, cols};
  const auto x = gpu_values(rows, cols, true);
  for (const qcast::DType t : {qcast::DType::f16, qcast::DType::bf16}) {
    const auto x16 = narrowed(t, x);
    std::vector<float> wide(x16.size());
    for (std::size_t i = 0; i < x16.size(); ++i) wide[i] = qcast::widen(t, x16[i]);
    const DeviceBuffer<std::uint16_t> in(x16);
    for (const char* name : {"mxfp4", "nvfp4", "mxfp6_e2m3", "mxfp8_e4m3", "mxint8", "int4@g128", "int8@channel",
                             "fp8_e4m3", "fp8_e5m2fnuz", "fp4_e2m1@g24:scale=e8m0"}) {
      INFO(qcast::dtype_name(t) << " " << name);
      const auto f = qcast::parse_format(name);
      const qcast::Encoded ref = qcast::encode(wide.data(), shape, f);
      DeviceBuffer<std::uint8_t> codes(ref.codes.size()), scales(ref.scales.size());
      const float s_t = qcast::cuda::encode(in.get(), t, shape, f, codes.get(), scales.get());
      CHECK(codes.to_host() == ref.codes);
      CHECK(scales.to_host() == ref.scales);
      CHECK(std::memcmp(&s_t, &ref.tensor_scale, 4) == 0);
    }
  }
}

TEST_CASE("cuda kernels on tensors larger than one grid pass equal the CPU kernels") {
  const int rows = 2048, cols = 4096;  // 8M elements: every kernel loops over its grid
  const qcast::Shape shape{rows, cols};
  const auto x = gpu_values(rows, cols, true);
  const DeviceBuffer<float> in(x);
  DeviceBuffer<float> out(x.size());
  qcast::CastOptions stochastic;
  stochastic.rounding = qcast::Rounding::stochastic;
  stochastic.seed = 99;
  for (const char* name : {"mxfp4", "nvfp4", "fp8_e4m3", "mxfp6_e2m3", "int4@g128", "int8@channel", "int8"}) {
    const auto f = qcast::parse_format(name);
    for (const auto& o : {qcast::CastOptions{}, stochastic}) {
      INFO(name << (o.rounding == qcast::Rounding::stochastic ? " stochastic" : ""));
      std::vector<float> ref(x.size());
      qcast::kernels::cast(x.data(), ref.data(), shape, f, o);
      qcast::cuda::cast(in.get(), out.get(), qcast::DType::f32, shape, f, o);
      CHECK(differing(out.to_host(), ref) == 0);
      const qcast::Encoded e = qcast::kernels::encode(x.data(), shape, f, o);
      DeviceBuffer<std::uint8_t> codes(e.codes.size()), scales(e.scales.size());
      const float s_t = qcast::cuda::encode(in.get(), qcast::DType::f32, shape, f, codes.get(), scales.get(), o);
      CHECK(codes.to_host() == e.codes);
      CHECK(scales.to_host() == e.scales);
      CHECK(std::memcmp(&s_t, &e.tensor_scale, 4) == 0);
      std::vector<float> decoded(x.size());
      qcast::kernels::decode(e, decoded.data());
      qcast::cuda::decode(codes.get(), scales.get(), s_t, shape, f, out.get(), qcast::DType::f32);
      CHECK(differing(out.to_host(), decoded) == 0);
    }
  }
}

TEST_CASE("cuda::encode reports the first NaN of a direct cast to a format without NaN, as the reference") {
  std::vector<float> x(100000, 1.0f);
  x[77777] = NAN;
  x[91234] = NAN;
  const DeviceBuffer<float> in(x);
  DeviceBuffer<std::uint8_t> codes(100000);
  for (const char* name : {"fp4_e2m1", "fp6_e3m2", "int8@none"}) {
    INFO(name);
    const auto f = qcast::parse_format(name);
    const std::string ref_what = qcast_test::reference_encode_error(x, {100000}, f);
    REQUIRE(!ref_what.empty());
    CHECK_THROWS_WITH(qcast::cuda::encode(in.get(), qcast::DType::f32, {100000}, f, codes.get(), nullptr), ref_what);
  }
}

TEST_CASE("cuda entry points reject invalid formats and axes as the reference does") {
  const DeviceBuffer<float> in(std::vector<float>(64, 1.0f));
  DeviceBuffer<float> out(64);
  qcast::Format bad = qcast::parse_format("mxfp4");
  bad.block_size = 0;
  CHECK_THROWS_AS(qcast::cuda::cast(in.get(), out.get(), qcast::DType::f32, {8, 8}, bad), std::invalid_argument);
  CHECK_THROWS_AS(qcast::cuda::cast(in.get(), out.get(), qcast::DType::f32, {8, 8}, qcast::parse_format("mxfp4:axis=2")),
                  std::invalid_argument);
}

TEST_CASE("cuda kernels equal the reference where a two-level divisor s * s_t rounds to 0") {
  // Binary32 and bfloat16 block scales over elements of max <= 1 (wider ones are rejected) put
  // s_t = amax_t / float(max_elem * max_scale) at a few subnormal ulps, or at 0, for a tensor of
  // small values. A zero element then
  // meets 0 / 0: the reference encodes its NaN code or, in formats without one, throws; cast and
  // decode give the canonical NaN where (q * s) * 0 is Inf * 0. tests/cuda/device_math_test.cpp
  // checks the device functions on the host; this checks the kernels' error path on the device.
  const qcast::Shape shape{8, 96};
  std::vector<float> x(8 * 96);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = i % 7 == 0 ? 0.0f : std::ldexp(float(i % 13) - 6.0f, -24);
  const DeviceBuffer<float> in(x);
  for (const char* name : {"int2@g32+tensor:scale=fp32", "int8f7@g16+tensor:scale=fp32", "e2m1nospb4@g16+tensor:scale=fp32",
                           "e4m3fnb16@g32+tensor:scale=bf16", "e5m2b31@g16+tensor:scale=fp32"}) {
    INFO(name);
    const auto f = qcast::parse_format(name);
    std::vector<float> ref(x.size());
    qcast::cast(x.data(), ref.data(), shape, f);
    DeviceBuffer<float> out(x.size());
    qcast::cuda::cast(in.get(), out.get(), qcast::DType::f32, shape, f);
    CHECK(differing(out.to_host(), ref) == 0);
    std::string ref_what;
    qcast::Encoded enc;
    try {
      enc = qcast::encode(x.data(), shape, f);
    } catch (const std::exception& error) {
      ref_what = error.what();
    }
    DeviceBuffer<std::uint8_t> codes(qcast::packed_size(x.size(), f.element.bits())),
        scales(qcast::packed_size(std::size_t(qcast::detail::GroupLayout(shape, f).groups()), f.scale_storage_bits()));
    if (!ref_what.empty()) {
      CHECK_THROWS_WITH(qcast::cuda::encode(in.get(), qcast::DType::f32, shape, f, codes.get(), scales.get()), ref_what);
      continue;
    }
    qcast::cuda::encode(in.get(), qcast::DType::f32, shape, f, codes.get(), scales.get());
    CHECK(codes.to_host() == enc.codes);
    CHECK(scales.to_host() == enc.scales);
  }
}

TEST_CASE("cuda kernels with a given tensor amax (no statistics pass) equal the reference") {
  const auto options = qcast_test::rounding_and_overflow_options();
  for (const int cols : {1024, 1000}) {  // the fused block path and the group path
    const int rows = 40;
    const qcast::Shape shape{rows, cols};
    const auto x = gpu_values(rows, cols, true);
    const DeviceBuffer<float> in(x);
    float measured = 0.0f;
    for (float v : x)
      if (std::isfinite(v)) measured = std::max(measured, std::fabs(v));
    for (const char* name : {"nvfp4", "fp4_e2m1@g16+tensor:scale=ue4m3:axis=0", "int4@g32+tensor"}) {
      const qcast::Format f = qcast::parse_format(name);
      for (const float amax : {measured * 0x1p-20f, measured, measured * 0x1p30f}) {
        for (std::size_t k = 0; k < options.size(); ++k) {
          INFO(name << " cols " << cols << " amax " << amax << " options#" << k);
          qcast::CastOptions o = options[k];
          o.tensor_amax = amax;
          std::vector<float> ref(x.size());
          qcast::cast(x.data(), ref.data(), shape, f, o);
          DeviceBuffer<float> out(x.size());
          qcast::cuda::cast(in.get(), out.get(), qcast::DType::f32, shape, f, o);
          CHECK(differing(out.to_host(), ref) == 0);
          const qcast::Encoded enc = qcast::encode(x.data(), shape, f, o);
          DeviceBuffer<std::uint8_t> codes(enc.codes.size()), scales(enc.scales.size());
          const float s_t = qcast::cuda::encode(in.get(), qcast::DType::f32, shape, f, codes.get(), scales.get(), o);
          CHECK(codes.to_host() == enc.codes);
          CHECK(scales.to_host() == enc.scales);
          CHECK(std::memcmp(&s_t, &enc.tensor_scale, 4) == 0);
        }
      }
    }
  }
  qcast::CastOptions bad;
  bad.tensor_amax = 1.0f;
  const DeviceBuffer<float> in(std::vector<float>(64, 1.0f));
  DeviceBuffer<float> out(64);
  CHECK_THROWS_WITH(qcast::cuda::cast(in.get(), out.get(), qcast::DType::f32, {64}, qcast::parse_format("mxfp4"), bad),
                    Catch::Matchers::Contains("no tensor scale"));
}
