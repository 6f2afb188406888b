// The compiled kernels equal the scalar reference bit for bit, on every instruction set compiled
// into this build and supported here, for every thread count.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>

#include "common/cast_options.hpp"
#include "common/streaming.hpp"
#include "common/tensor_values.hpp"
#include "qcast/hadamard.hpp"
#include "qcast/kernels.hpp"

namespace {

bool same(float a, float b) {
  std::uint32_t x, y;
  std::memcpy(&x, &a, 4);
  std::memcpy(&y, &b, 4);
  return x == y;  // NaNs too: both sides must produce the canonical NaN
}

std::vector<float> test_values(int rows, int cols) {
  auto x = qcast_test::scaled_normal_rows(rows, cols, 12);
  // Specials in a few places: NaN, Inf, zero rows, subnormals, ties of the fp8 grid.
  x[5] = std::numeric_limits<float>::quiet_NaN();
  x[cols * 2 + 7] = INFINITY;
  x[cols * 3 + 1] = -INFINITY;
  for (int c = 0; c < cols; ++c) x[std::size_t(4) * cols + c] = (c % 2) ? -0.0f : 0.0f;
  for (int c = 0; c < cols; ++c) x[std::size_t(5) * cols + c] = std::ldexp(float(c), -140);
  for (int c = 0; c < cols; ++c) x[std::size_t(6) * cols + c] = 1.0f + float(c) / 16.0f;  // e4m3 ties
  for (int c = 0; c < cols; ++c) x[std::size_t(7) * cols + c] = float(c) * 1e4f;         // overflow
  return x;
}

std::size_t mismatches(const std::vector<float>& x, const qcast::Shape& shape, const qcast::Format& f,
                       const qcast::CastOptions& o, int threads) {
  std::vector<float> ref(x.size()), got(x.size());
  qcast::cast(x.data(), ref.data(), shape, f, o);
  qcast::kernels::cast(x.data(), got.data(), shape, f, o, threads);
  std::size_t bad = 0;
  for (std::size_t i = 0; i < x.size(); ++i) bad += !same(ref[i], got[i]);
  return bad;
}

}  // namespace

TEST_CASE("kernels equal the reference on every target, format, option and thread count") {
  const int rows = 96, cols = 1000;  // 96k elements: several threads get work
  const auto x = test_values(rows, cols);
  const auto targets = qcast::kernels::available_targets();
  REQUIRE(!targets.empty());
  const std::vector<qcast::CastOptions> options = qcast_test::rounding_and_overflow_options();
  std::vector<std::string> names;
  for (const auto& n : qcast::named_formats()) names.push_back(n.name);
  for (const char* extra : {"fp8_e4m3@channel", "int4@g128:axis=0", "fp4_e2m1@g32:scale=e8m0:rule=rceil",
                            "fp6_e2m3@g64:scale=e8m0:rule=ceil", "fp8_e5m2@g32:scale=e8m0:rule=even", "e3m4fnuzb5",
                            "fp4_e2m1@g16:scale=ue4m3", "uint8", "e8m0"})
    names.push_back(extra);
  for (const auto& target : targets) {
    qcast::kernels::use_target(target);
    CHECK(qcast::kernels::current_target() == target);
    for (const auto& name : names) {
      const qcast::Format f = qcast::parse_format(name);
      for (std::size_t k = 0; k < options.size(); ++k) {
        for (int threads : {1, 2, 3}) {
          INFO(target << " " << name << " options#" << k << " threads " << threads);
          CHECK(mismatches(x, {rows, cols}, f, options[k], threads) == 0);
        }
      }
    }
  }
  qcast::kernels::use_target("");
}

TEST_CASE("column groups (blocks along a non-last axis, channels along the last) equal the reference") {
  // Groups strided across rows take the column-band kernel: a band's columns are its groups. Shapes:
  // 3 bands of 70 rows per outer index with a partial last block, rows of 1100 (more than one chunk
  // of columns, a tail that is no whole vector), narrow rows, channels of 2-D and 3-D tensors. Columns
  // hold a NaN, an Inf, only zeros, subnormals, ties of the fp8 grid; every option, 1-3 threads,
  // every target, and in place.
  struct Case {
    qcast::Shape shape;
    std::vector<const char*> formats;
  };
  const std::vector<Case> cases = {
      {{3, 70, 1100}, {"e2m1@g32:scale=e8m0:axis=1", "e2m1@g16+tensor:axis=1", "int4@g128:axis=1", "int8@g32:axis=-2"}},
      {{300, 40}, {"e4m3@g32:scale=e8m0:axis=0", "e2m3@g32:scale=e8m0:rule=rceil:axis=0", "int4@g64:axis=0",
                   "e2m1@g16+tensor:axis=0"}},
      {{500, 37}, {"int8@channel:axis=1", "e4m3@channel:axis=-1", "int4@channel:axis=1"}},
      {{4, 50, 33}, {"int8@channel:axis=2", "e5m2@g16:scale=e8m0:axis=1"}},
  };
  const auto options = qcast_test::rounding_and_overflow_options();
  for (const auto& c : cases) {
    const std::int64_t cols = c.shape.back();
    std::int64_t n = 1;
    for (auto d : c.shape) n *= d;
    auto x = qcast_test::scaled_normal_rows(int(n / cols), int(cols), 91);
    const std::int64_t rows = n / cols;
    for (std::int64_t r = 0; r < rows; ++r) {
      const auto at = [&](std::int64_t k) -> float& { return x[std::size_t(r * cols + k)]; };
      at(3) = 0.0f;                                           // a column of zeros
      at(6) = std::ldexp(float(r % 7), -140);                 // subnormals
      at(8) = 1.0f + float(r % 16) / 16.0f;                   // e4m3 ties
    }
    x[std::size_t(11 * cols + 5)] = std::numeric_limits<float>::quiet_NaN();
    x[std::size_t(17 * cols + 7)] = -INFINITY;
    for (const auto& target : qcast::kernels::available_targets()) {
      qcast::kernels::use_target(target);
      for (const char* name : c.formats) {
        const qcast::Format f = qcast::parse_format(name);
        for (std::size_t k = 0; k < options.size(); ++k) {
          for (int threads : {1, 2, 3}) {
            INFO(target << " " << name << " rank " << c.shape.size() << " options#" << k << " threads " << threads);
            CHECK(mismatches(x, c.shape, f, options[k], threads) == 0);
          }
          std::vector<float> ref(x.size()), in_place = x;
          qcast::cast(x.data(), ref.data(), c.shape, f, options[k]);
          qcast::kernels::cast(in_place.data(), in_place.data(), c.shape, f, options[k], 2);
          std::size_t bad = 0;
          for (std::size_t i = 0; i < x.size(); ++i) bad += !same(ref[i], in_place[i]);
          INFO(target << " " << name << " in place, options#" << k);
          CHECK(bad == 0);
        }
      }
    }
  }
  qcast::kernels::use_target("");
}

TEST_CASE("channels along a middle axis (groups of contiguous runs) equal the reference") {
  // A channel of [outer, C, inner] is `outer` runs of `inner` contiguous elements: each run is one
  // span of the SIMD kernel. Runs of 72, of odd length, longer than a 4096-element tile; rank 4
  // (NCHW); a NaN channel, an Inf channel, a zero channel; every option, 1-3 threads, every target,
  // float32 and (through the 16-bit entry point) bfloat16 / float16.
  const auto options = qcast_test::rounding_and_overflow_options();
  for (const auto& c : qcast_test::channel_run_cases(97)) {
    const qcast::Shape& shape = c.shape;
    const std::int64_t inner = c.inner;
    const std::vector<float>& x = c.values;
    for (const auto& target : qcast::kernels::available_targets()) {
      qcast::kernels::use_target(target);
      for (const char* name : qcast_test::kChannelRunFormats) {
        const qcast::Format f = qcast::parse_format(name);
        for (std::size_t k = 0; k < options.size(); ++k) {
          for (int threads : {1, 2, 3}) {
            INFO(target << " " << name << " inner " << inner << " options#" << k << " threads " << threads);
            CHECK(mismatches(x, shape, f, options[k], threads) == 0);
          }
          for (qcast::DType t : {qcast::DType::bf16, qcast::DType::f16}) {
            std::vector<std::uint16_t> x16(x.size()), ref(x.size()), got(x.size());
            for (std::size_t i = 0; i < x.size(); ++i) x16[i] = qcast::narrow(t, x[i]);
            qcast::cast(x16.data(), ref.data(), t, shape, f, options[k]);
            qcast::kernels::cast(x16.data(), got.data(), t, shape, f, options[k], 3);
            std::size_t bad = 0;
            for (std::size_t i = 0; i < x.size(); ++i) bad += got[i] != ref[i];
            INFO(target << " " << name << " inner " << inner << " options#" << k << " " << qcast::dtype_name(t));
            CHECK(bad == 0);
          }
        }
      }
    }
  }
  qcast::kernels::use_target("");
}

TEST_CASE("shapes with dimensions of size 1 around the axis equal the reference") {
  // The drivers take these as the shape without the unit dimensions (canonical_layout.hpp); the
  // results must be those of the shape as given, on every target, 1-3 threads, every option, and
  // through the 16-bit entry point.
  const auto options = qcast_test::rounding_and_overflow_options();
  for (const auto& c : qcast_test::unit_dim_cases(31)) {
    const qcast::Format f = qcast::parse_format(c.format);
    for (const auto& target : qcast::kernels::available_targets()) {
      qcast::kernels::use_target(target);
      for (std::size_t k = 0; k < options.size(); ++k) {
        for (int threads : {1, 2, 3}) {
          INFO(target << " " << c.format << " shape rank " << c.shape.size() << " options#" << k << " threads "
                      << threads);
          CHECK(mismatches(c.values, c.shape, f, options[k], threads) == 0);
        }
        std::vector<std::uint16_t> x16(c.values.size()), ref(c.values.size()), got(c.values.size());
        for (std::size_t i = 0; i < x16.size(); ++i) x16[i] = qcast::narrow(qcast::DType::bf16, c.values[i]);
        qcast::cast(x16.data(), ref.data(), qcast::DType::bf16, c.shape, f, options[k]);
        qcast::kernels::cast(x16.data(), got.data(), qcast::DType::bf16, c.shape, f, options[k], 3);
        std::size_t bad = 0;
        for (std::size_t i = 0; i < x16.size(); ++i) bad += got[i] != ref[i];
        INFO(target << " " << c.format << " options#" << k << " bf16");
        CHECK(bad == 0);
      }
    }
  }
  qcast::kernels::use_target("");
}

TEST_CASE("block kernels equal the reference where blocks of every kind follow each other in a line") {
  // Lines of 2168 elements: more than one chunk of blocks in the lean path, and a partial last block.
  const int rows = 12, cols = 2168;
  const char* names[] = {"mxfp4", "mxfp6_e2m3", "mxfp6_e3m2", "mxfp8_e4m3", "mxfp8_e5m2", "mxint8", "nvfp4",
                         "fp4_e2m1@g16:scale=ue4m3", "int4@g32", "int8@g128"};
  for (bool extremes : {false, true}) {
    const auto x = qcast_test::mixed_block_rows(rows, cols, 16, extremes, 5);
    const auto x32 = qcast_test::mixed_block_rows(rows, cols, 32, extremes, 6);
    for (const auto& target : qcast::kernels::available_targets()) {
      qcast::kernels::use_target(target);
      for (const char* name : names) {
        const qcast::Format f = qcast::parse_format(name);
        for (int threads : {1, 3}) {
          INFO(target << " " << name << " extremes " << extremes << " threads " << threads);
          CHECK(mismatches(x, {rows, cols}, f, {}, threads) == 0);
          CHECK(mismatches(x32, {rows, cols}, f, {}, threads) == 0);
        }
      }
    }
  }
  qcast::kernels::use_target("");
}

TEST_CASE("streaming stores give the same results, on aligned and unaligned outputs") {
  // The threshold at 0 streams every cast; an output one float off the vector alignment takes the
  // ordinary stores. In-place casts stream onto the lines just read.
  const int rows = 12, cols = 2168;
  const auto x = qcast_test::mixed_block_rows(rows, cols, 32, false, 9);
  const std::size_t n = x.size();
  const qcast_test::AlignedFloats buffer(n + 16);
  const qcast_test::StreamEveryOutput stream_all;
  for (const auto& target : qcast::kernels::available_targets()) {
    qcast::kernels::use_target(target);
    for (const char* name : {"fp8_e4m3", "int8", "int8@channel", "mxfp4", "mxint8", "nvfp4", "int4@g128",
                             "fp4_e2m1@g16:scale=ue4m3", "e3m4fnuzb5"}) {
      const qcast::Format f = qcast::parse_format(name);
      std::vector<float> ref(n);
      qcast::cast(x.data(), ref.data(), {rows, cols}, f);
      for (std::size_t offset : {0, 1}) {
        float* got = buffer.get() + offset;
        qcast::kernels::cast(x.data(), got, {rows, cols}, f, {}, 3);
        std::size_t bad = 0;
        for (std::size_t i = 0; i < n; ++i) bad += !same(ref[i], got[i]);
        std::copy(x.begin(), x.end(), got);
        qcast::kernels::cast(got, got, {rows, cols}, f, {}, 2);
        for (std::size_t i = 0; i < n; ++i) bad += !same(ref[i], got[i]);
        INFO(target << " " << name << " offset " << offset);
        CHECK(bad == 0);
      }
    }
  }
  qcast::kernels::use_target("");
}

TEST_CASE("kernels on every fp16 bit pattern, direct casts") {
  std::vector<float> x(65536);
  for (std::uint32_t c = 0; c < 65536; ++c) x[c] = qcast::widen(qcast::DType::f16, std::uint16_t(c));
  for (const auto& target : qcast::kernels::available_targets()) {
    qcast::kernels::use_target(target);
    for (const char* name : {"fp8_e4m3", "fp8_e5m2", "fp8_e4m3fnuz", "fp8_e5m2fnuz", "fp6_e2m3", "fp6_e3m2", "fp4_e2m1",
                             "fp16", "bf16"}) {
      INFO(target << " " << name);
      CHECK(mismatches(x, {65536}, qcast::parse_format(name), {}, 2) == 0);
    }
  }
  qcast::kernels::use_target("");
}

TEST_CASE("use_target rejects unknown instruction sets with the valid list") {
  CHECK_THROWS_WITH(qcast::kernels::use_target("VLIW9000"), Catch::Contains("not available here (valid: "));
}

TEST_CASE("16-bit kernels equal the reference's 16-bit path on every bit pattern and target") {
  std::vector<std::uint16_t> in(65536);
  for (std::uint32_t c = 0; c < 65536; ++c) in[c] = std::uint16_t(c);
  for (const auto& target : qcast::kernels::available_targets()) {
    qcast::kernels::use_target(target);
    for (qcast::DType t : {qcast::DType::f16, qcast::DType::bf16}) {
      for (const char* name : {"fp8_e4m3", "mxfp4", "nvfp4", "int4@g32", "int8", "int8@channel", "fp16", "bf16", "fp32",
                               "int4@g32:axis=0", "e2m1@g16+tensor:axis=0", "int8@channel:axis=1"}) {
        const auto f = qcast::parse_format(name);
        std::vector<std::uint16_t> ref(in.size()), got(in.size());
        qcast::cast(in.data(), ref.data(), t, {256, 256}, f);
        qcast::kernels::cast(in.data(), got.data(), t, {256, 256}, f, {}, 2);
        std::size_t bad = 0;
        for (std::size_t i = 0; i < in.size(); ++i) bad += ref[i] != got[i];
        INFO(target << " " << qcast::dtype_name(t) << " " << name);
        CHECK(bad == 0);
      }
    }
  }
  qcast::kernels::use_target("");
}

TEST_CASE("16-bit kernels equal the reference's 16-bit path on lines longer than a tile, for every option") {
  // The tiled 16-bit cast: lines of 5000 (more than a 4096-element tile, ending in a partial block),
  // a 1-D tensor that is not a whole number of tiles, one-scale and channel formats, column groups
  // (blocks along the first axis, channels along the last: a row at a time by column bands), every
  // thread count, and in place.
  const auto rows = qcast_test::scaled_normal_rows(37, 5000, 77);
  std::vector<float> flat(100003);
  std::mt19937 rng(78);
  std::normal_distribution<float> normal;
  for (auto& v : flat) v = normal(rng);
  const auto options = qcast_test::rounding_and_overflow_options();
  for (qcast::DType t : {qcast::DType::bf16, qcast::DType::f16}) {
    for (const std::vector<float>* x : {&rows, static_cast<const std::vector<float>*>(&flat)}) {
      const qcast::Shape shape = x == &rows ? qcast::Shape{37, 5000} : qcast::Shape{100003};
      std::vector<std::uint16_t> in(x->size());
      for (std::size_t i = 0; i < in.size(); ++i) in[i] = qcast::narrow(t, (*x)[i] * (t == qcast::DType::f16 ? 1e-6f : 1.0f));
      for (const char* name : {"fp8_e4m3", "fp4_e2m1", "int8", "int4", "int8@channel", "mxfp4", "mxfp6_e2m3", "nvfp4",
                               "int4@g128", "mxint8", "int4@g128:axis=0", "e2m1@g32:scale=e8m0:axis=0",
                               "e2m1@g16+tensor:axis=0", "int8@channel:axis=-1"}) {
        if (shape.size() == 1 && std::string(name).find("axis") != std::string::npos) continue;  // rank 2 only
        const auto f = qcast::parse_format(name);
        for (std::size_t k = 0; k < options.size(); ++k) {
          const qcast::CastOptions* o = &options[k];
          std::vector<std::uint16_t> ref(in.size());
          qcast::cast(in.data(), ref.data(), t, shape, f, *o);
          for (int threads : {1, 2, 3}) {
            std::vector<std::uint16_t> got(in.size());
            qcast::kernels::cast(in.data(), got.data(), t, shape, f, *o, threads);
            std::size_t bad = 0;
            for (std::size_t i = 0; i < in.size(); ++i) bad += ref[i] != got[i];
            INFO(qcast::dtype_name(t) << " " << name << " shape rank " << shape.size() << " options#" << k
                                      << " threads " << threads);
            CHECK(bad == 0);
          }
          std::vector<std::uint16_t> in_place = in;
          qcast::kernels::cast(in_place.data(), in_place.data(), t, shape, f, *o, 2);
          std::size_t bad = 0;
          for (std::size_t i = 0; i < in.size(); ++i) bad += in_place[i] != ref[i];
          INFO(qcast::dtype_name(t) << " " << name << " shape rank " << shape.size() << " options#" << k << " in place");
          CHECK(bad == 0);
        }
      }
    }
  }
}

TEST_CASE("the Hadamard kernel equals the reference on every target and thread count, and H/sqrt(B) itself") {
  std::mt19937 rng(77);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (const std::int64_t block : {1, 2, 4, 8, 16, 32, 64, 128, 256}) {
    // Enough blocks that several threads get a share; NaN, Inf, a huge value and signed zeros.
    const std::int64_t n = block * std::max<std::int64_t>(3, (1 << 18) / block);
    const std::vector<float> x = qcast_test::hadamard_values(n, unsigned(77 + block));
    std::vector<float> want = x;
    qcast::hadamard(want.data(), n, block);
    for (const auto& target : qcast::kernels::available_targets()) {
      qcast::kernels::use_target(target);
      for (const int threads : {1, 3}) {
        std::vector<float> got = x;
        qcast::kernels::hadamard(got.data(), n, block, threads);
        std::size_t bad = 0;
        for (std::size_t i = 0; i < got.size(); ++i) bad += !same(got[i], want[i]);
        INFO(target << ", block " << block << ", " << threads << " threads");
        CHECK(bad == 0);
      }
    }
    qcast::kernels::use_target("");
  }
  // The reference against the explicit Sylvester matrix H_B / sqrt(B), in binary64.
  for (const std::int64_t block : {2, 8, 32}) {
    std::vector<float> x(static_cast<std::size_t>(block));
    for (auto& v : x) v = normal(rng);
    std::vector<float> y = x;
    qcast::hadamard(y.data(), block, block);
    for (std::int64_t r = 0; r < block; ++r) {
      double want = 0;
      for (std::int64_t c = 0; c < block; ++c)  // Sylvester: H[r][c] = (-1)^popcount(r & c)
        want += (__builtin_popcountll(std::uint64_t(r & c)) % 2 ? -1.0 : 1.0) * double(x[std::size_t(c)]);
      want /= std::sqrt(double(block));
      CHECK(double(y[std::size_t(r)]) == Approx(want).margin(1e-5));
    }
  }
  std::vector<float> x(24);
  CHECK_THROWS_WITH(qcast::kernels::hadamard(x.data(), 24, 16), Catch::Contains("does not divide"));
  CHECK_THROWS_WITH(qcast::kernels::hadamard(x.data(), 24, 12), Catch::Contains("power of two"));
}
