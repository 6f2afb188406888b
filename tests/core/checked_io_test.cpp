// Checked sizes, the strict .npy and .qpack readers on malformed input, and all-or-nothing outputs
// (docs/reliability.md).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "qcast/detail/atomic_file.hpp"
#include "qcast/npy.hpp"
#include "qcast/qpack.hpp"
#include "qcast/sizes.hpp"

namespace fs = std::filesystem;

namespace {

std::vector<std::uint8_t> npy_bytes(const std::string& dict, std::size_t payload) {
  std::string h = dict;
  h.append((64 - (10 + h.size() + 1) % 64) % 64, ' ');
  h += '\n';
  std::vector<std::uint8_t> b = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, std::uint8_t(h.size() & 0xFF), std::uint8_t(h.size() >> 8)};
  b.insert(b.end(), h.begin(), h.end());
  b.resize(b.size() + payload, 0);
  return b;
}

qcast::NpyArray parse(const std::string& dict, std::size_t payload) { return qcast::parse_npy(npy_bytes(dict, payload), "t.npy"); }

std::string dict(const std::string& shape) { return "{'descr': '<f4', 'fortran_order': False, 'shape': " + shape + ", }"; }

}  // namespace

TEST_CASE("checked_elements rejects negative and overflowing shapes, zero dimensions included") {
  CHECK(qcast::checked_elements({}, "") == 1);
  CHECK(qcast::checked_elements({3, 0, 5}, "") == 0);
  CHECK(qcast::checked_elements({std::int64_t(1) << 28, std::int64_t(1) << 28}, "") == std::int64_t(1) << 56);
  CHECK_THROWS_AS(qcast::checked_elements({std::int64_t(1) << 28, (std::int64_t(1) << 28) + 1}, "x"), qcast::SizeError);
  CHECK_THROWS_WITH(qcast::checked_elements({4294967296, 4294967296}, "a.npy"),
                    Catch::Contains("a.npy: shape (4294967296, 4294967296) has more than 2^56"));
  CHECK_THROWS_WITH(qcast::checked_elements({0, std::int64_t(1) << 40, std::int64_t(1) << 40}, ""), Catch::Contains("2^56"));
  CHECK_THROWS_WITH(qcast::checked_elements({2, -1}, ""), Catch::Contains("negative"));
  // The cast entry points check before any index arithmetic.
  std::vector<float> x(4);
  CHECK_THROWS_AS(qcast::cast(x.data(), x.data(), {4294967296, 4294967296}, qcast::parse_format("mxfp4")), qcast::SizeError);
}

TEST_CASE("the .npy header follows its grammar exactly") {
  CHECK(parse(dict("(4, 64)"), 4 * 64 * 4).shape == qcast::Shape{4, 64});
  CHECK(parse(dict("(4,)"), 16).shape == qcast::Shape{4});
  CHECK(parse(dict("()"), 4).shape == qcast::Shape{});
  CHECK(parse("{\"shape\": (2, 3), \"fortran_order\": False, \"descr\": \"<f2\"}", 12).dtype == qcast::DType::f16);
  const std::vector<std::pair<std::string, std::string>> bad = {
      {dict("(4 64)"), "expected ',' or ')'"},
      {dict("(4, 64abc)"), "expected ',' or ')'"},
      {dict("(256)"), "not a tuple"},
      {dict("(-1, 4)"), "non-negative integer"},
      {dict("(04,)"), "leading zero"},
      {dict("(4,)") + "junk", "after the header dict"},
      {"{'descr': '<f4', 'fortran_order': False}", "no 'shape'"},
      {"{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (1,)}", "twice"},
      {"{'descr': '<f4', 'fortran_order': 0, 'shape': (1,)}", "True or False"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'extra': 1}", "unknown key"},
  };
  for (const auto& [header, says] : bad) {
    INFO(header);
    CHECK_THROWS_WITH(parse(header, 1024), Catch::Contains("t.npy") && Catch::Contains(says));
  }
}

TEST_CASE("the .npy payload must be exactly what the shape says, checked before allocating") {
  CHECK_THROWS_WITH(parse(dict("(4,)"), 15), Catch::Contains("truncated data"));
  auto minor = npy_bytes(dict("(4,)"), 16);
  minor[7] = 154;  // NumPy reads x.0 versions only
  CHECK_THROWS_WITH(qcast::parse_npy(std::move(minor), "t.npy"), Catch::Contains("version 1.154"));
  CHECK_THROWS_WITH(parse(dict("(4,)"), 17), Catch::Contains("1 bytes follow the data"));
  CHECK_THROWS_WITH(parse(dict("(268435456,)"), 1100), Catch::Contains("needs 1073741824 bytes, the file holds 1100"));
  CHECK_THROWS_AS(parse(dict("(4294967296, 4294967296)"), 64), qcast::SizeError);
  const fs::path dir = fs::temp_directory_path() / "qcast_checked_io_test";
  fs::create_directories(dir);
  CHECK_THROWS_WITH(qcast::read_npy(dir.string()), Catch::Contains("is a folder"));
}

TEST_CASE("the .qpack reader rejects inconsistent entries before allocating") {
  auto entry = [](const std::vector<std::int64_t>& shape, std::uint8_t layout, std::int64_t rows, std::int64_t cols,
                  std::uint64_t codes) {
    std::ostringstream f;
    f.write("QCASTPK1", 8);
    auto put = [&](auto v) { f.write(reinterpret_cast<const char*>(&v), sizeof v); };  // little-endian host
    put(std::uint32_t(1));
    put(std::uint32_t(1));
    put(std::uint32_t(1));
    f.write("w", 1);
    put(std::uint32_t(8));
    f.write("fp8_e4m3", 8);
    put(std::uint32_t(shape.size()));
    for (auto d : shape) put(d);
    put(layout);
    put(rows);
    put(cols);
    put(1.0f);
    put(codes);
    f << std::string(std::size_t(std::min<std::uint64_t>(codes, 64)), '\0');
    put(std::uint64_t(0));
    return f.str();
  };
  auto read = [](const std::string& bytes) {
    std::istringstream in(bytes);
    return qcast::read_qpack(in, bytes.size(), "t.qpack");
  };
  CHECK(read(entry({2, 3}, 0, 2, 3, 6)).size() == 1);
  CHECK(read(entry({2, 3}, 1, 3, 2, 6)).size() == 1);
  CHECK_THROWS_WITH(read(entry({4294967296, 4294967296}, 0, 4294967296, 4294967296, 0)), Catch::Contains("2^56"));
  CHECK_THROWS_WITH(read(entry({2, 3}, 1, 2, 3, 6)), Catch::Contains("is not the parameter"));
  CHECK_THROWS_WITH(read(entry({2, 3}, 0, 3, 3, 6)), Catch::Contains("is not the parameter"));
  CHECK_THROWS_WITH(read(entry({64, 64}, 0, 64, 64, std::uint64_t(1) << 60)), Catch::Contains("hold"));
  CHECK_THROWS_WITH(read(entry({4, 4}, 0, 4, 4, 16).substr(0, 60)), Catch::Contains("truncated"));
}

TEST_CASE("OutputSet: collisions and missing folders fail first, temporaries never outlive it") {
  const fs::path dir = fs::temp_directory_path() / "qcast_output_set_test";
  std::error_code ec;
  fs::remove_all(dir, ec);
  fs::create_directories(dir);
  const std::string a = (dir / "a.bin").string(), b = (dir / "b.bin").string(), in = (dir / "in.bin").string();
  std::ofstream(in) << "input";
  using qcast::detail::OutputSet;
  CHECK_THROWS_WITH(OutputSet({{"-o", a}, {"--export", (dir / "." / "a.bin").string()}}, {}), Catch::Contains("is also -o"));
  CHECK_THROWS_WITH(OutputSet({{"-o", in}}, {in}), Catch::Contains("is an input"));
  fs::create_hard_link(in, dir / "link.bin");
  CHECK_THROWS_WITH(OutputSet({{"-o", (dir / "link.bin").string()}}, {in}), Catch::Contains("is an input"));
  CHECK_THROWS_WITH(OutputSet({{"-o", (dir / "missing" / "x").string()}}, {}), Catch::Contains("does not exist"));
  CHECK_THROWS_WITH(OutputSet({{"-o", dir.string()}}, {}), Catch::Contains("is a folder"));
  if (fs::exists("/dev/null")) CHECK_THROWS_WITH(OutputSet({{"-o", "/dev/null"}}, {}), Catch::Contains("not a regular file"));
  auto files = [&] {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
  };
  const auto before = files();
  {  // an error after the first write: nothing appears, the temporaries go
    OutputSet out({{"-o", a}, {"--report", b}}, {in});
    CHECK(files().size() == before.size() + 2);  // made before any work
    out.write(0, [](std::ostream& f) { f << "model"; });
    CHECK_THROWS(out.write(1, [](std::ostream&) { throw std::runtime_error("disk full"); }));
  }
  CHECK(files() == before);
  {
    OutputSet out({{"-o", a}, {"--report", b}}, {in});
    out.write(0, [](std::ostream& f) { f << "model"; });
    out.write(1, [](std::ostream& f) { f << "report"; });
    CHECK(!fs::exists(a));  // nothing is in place before commit
    out.commit();
  }
  {  // the second temporary cannot be made (its name passes 255 bytes): the first one goes too
    const auto now = files();
    const std::string long_name = (dir / std::string(250, 'n')).string();
    CHECK_THROWS_WITH(OutputSet({{"-o", (dir / "c.bin").string()}, {"--report", long_name}}, {}),
                      Catch::Contains("cannot create"));
    CHECK(files() == now);
  }
  CHECK(fs::file_size(a) == 5);
  CHECK(fs::file_size(b) == 6);
  CHECK(files().size() == before.size() + 2);
}
