// float16 / bfloat16 storage: widen exactly, cast, round the result to the storage type.
#include <catch2/catch.hpp>

#include <cmath>
#include <random>

#include "bits.hpp"
#include "qcast/cast.hpp"

TEST_CASE("16-bit casts equal the binary32 cast rounded to the storage type") {
  for (qcast::DType t : {qcast::DType::f16, qcast::DType::bf16}) {
    std::vector<std::uint16_t> in(65536);
    for (std::uint32_t c = 0; c < 65536; ++c) in[c] = std::uint16_t(c);
    for (const char* name : {"fp8_e4m3", "mxfp4", "nvfp4", "int4@g32", "fp6_e3m2"}) {
      const auto f = qcast::parse_format(name);
      std::vector<std::uint16_t> out(in.size());
      qcast::cast(in.data(), out.data(), t, {256, 256}, f);
      std::vector<float> wide(in.size()), ref(in.size());
      for (std::size_t i = 0; i < in.size(); ++i) wide[i] = qcast::widen(t, in[i]);
      qcast::cast(wide.data(), ref.data(), {256, 256}, f);
      std::size_t bad = 0;
      for (std::size_t i = 0; i < in.size(); ++i) bad += out[i] != qcast::narrow(t, ref[i]);
      INFO(name << " " << qcast::dtype_name(t));
      CHECK(bad == 0);
    }
  }
}

TEST_CASE("narrowing to fp16 and bf16 rounds to nearest even and overflows to Inf") {
  using qcast::DType;
  CHECK(qcast::narrow(DType::bf16, 1.0f) == 0x3F80);
  CHECK(qcast::narrow(DType::bf16, qcast_test::from_bits(0x3F808000u)) == 0x3F80);  // tie -> even
  CHECK(qcast::narrow(DType::bf16, qcast_test::from_bits(0x3F818000u)) == 0x3F82);  // tie -> even
  CHECK(qcast::narrow(DType::f16, 65504.0f) == 0x7BFF);
  CHECK(qcast::narrow(DType::f16, 65520.0f) == 0x7C00);
  CHECK(qcast::narrow(DType::f16, 1e-8f) == 0x0000);
  CHECK(qcast::narrow(DType::f16, 6e-8f) == 0x0001);
  CHECK(qcast::narrow(DType::f16, -0.0f) == 0x8000);
}

TEST_CASE("fp16 and bf16 as formats convert as IEEE 754 does unless told to saturate") {
  std::mt19937 rng(5);
  std::vector<float> x(100000);
  for (auto& v : x) v = qcast_test::from_bits(rng());
  x[0] = INFINITY, x[1] = -INFINITY, x[2] = 70000.0f, x[3] = 3.4e38f;
  for (qcast::DType t : {qcast::DType::f16, qcast::DType::bf16}) {
    const auto f = qcast::parse_format(t == qcast::DType::f16 ? "fp16" : "bf16");
    std::vector<float> y(x.size());
    qcast::cast(x.data(), y.data(), {std::int64_t(x.size())}, f);
    std::size_t bad = 0;
    for (std::size_t i = 0; i < x.size(); ++i) bad += !qcast_test::same(y[i], qcast::widen(t, qcast::narrow(t, x[i])));
    CHECK(bad == 0);
    CHECK(std::isinf(y[0]));
    qcast::CastOptions sat;
    sat.saturate = true;
    qcast::cast(x.data(), y.data(), {4}, f, sat);
    CHECK(y[0] == float(f.element.max_value()));
    CHECK(y[1] == -float(f.element.max_value()));
  }
}
