#include <catch2/catch.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "qcast/npy.hpp"

namespace fs = std::filesystem;

TEST_CASE("npy round trip keeps shape and values") {
  const fs::path dir = fs::temp_directory_path() / "qcast_npy_roundtrip";
  fs::remove_all(dir);
  fs::create_directories(dir);
  for (const qcast::Shape& shape : {qcast::Shape{}, qcast::Shape{5}, qcast::Shape{2, 3, 4}, qcast::Shape{0, 7}}) {
    std::int64_t n = 1;
    for (auto d : shape) n *= d;
    std::vector<float> v(static_cast<std::size_t>(n));
    for (std::size_t i = 0; i < v.size(); ++i) v[i] = float(i) * 0.25f - 1.0f;
    const std::string p = (dir / "a.npy").string();
    qcast::write_npy(p, shape, v.data());
    const auto a = qcast::read_npy(p);
    CHECK(a.shape == shape);
    CHECK(a.dtype == qcast::DType::f32);
    CHECK(a.to_float() == v);
  }
  // No temporary files are left behind.
  std::size_t files = 0;
  for (auto& e : fs::directory_iterator(dir)) files += e.is_regular_file();
  CHECK(files == 1);
}

TEST_CASE("npy errors name the file and the problem") {
  const fs::path dir = fs::temp_directory_path() / "qcast_npy_test";
  fs::create_directories(dir);
  const std::string p = (dir / "bad.npy").string();
  {
    std::ofstream f(p, std::ios::binary);
    f << "not numpy at all";
  }
  CHECK_THROWS_WITH(qcast::read_npy(p), Catch::Contains(p) && Catch::Contains("bad magic"));
  CHECK_THROWS_WITH(qcast::read_npy((dir / "missing.npy").string()), Catch::Contains("cannot open"));
  {
    std::ofstream f(p, std::ios::binary);
    const std::string h = "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }";
    f << "\x93NUMPY" << char(1) << char(0) << char(h.size()) << char(0) << h;
  }
  CHECK_THROWS_WITH(qcast::read_npy(p), Catch::Contains("'<f8'") && Catch::Contains("valid: '<f4'"));
  std::vector<float> v(4, 1.0f);
  qcast::write_npy(p, {4}, v.data());
  fs::resize_file(p, fs::file_size(p) - 3);
  CHECK_THROWS_WITH(qcast::read_npy(p), Catch::Contains("truncated data"));
}
