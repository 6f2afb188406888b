// qcast::safetensors: quantized weights written and read back bit for bit, the dtypes PyTorch
// reads, the layout of the safetensors header, and a clear error for each kind of damaged file.
#include <catch2/catch.hpp>

#include <cstring>
#include <sstream>

#include "qcast/cast.hpp"
#include "qcast/format_names.hpp"
#include "qcast/safetensors.hpp"

namespace {

qcast::PackedWeight weight(const std::string& name, const std::string& format, std::int64_t rows, std::int64_t cols,
                           std::uint32_t seed) {
  std::vector<float> w(std::size_t(rows * cols));
  std::uint32_t s = seed;
  for (auto& v : w) {
    s = s * 1664525u + 1013904223u;
    v = float(std::int32_t(s >> 8) % 20000) / 4000.0f;
  }
  qcast::Format f = qcast::parse_format(format);
  if (f.granularity == qcast::Granularity::block) f.axis = -1;  // as the engine's weight grid does
  if (f.granularity == qcast::Granularity::channel) f.axis = 0;
  qcast::PackedWeight p;
  p.name = name;
  p.shape = {rows, cols};
  p.matrix = qcast::encode(w.data(), {rows, cols}, f);
  return p;
}

std::string bytes_of(const qcast::SafetensorsFile& f) {
  std::ostringstream out;
  qcast::write_safetensors(out, f);
  return out.str();
}

qcast::SafetensorsFile parse(const std::string& b) {
  return qcast::parse_safetensors(reinterpret_cast<const std::uint8_t*>(b.data()), b.size(), "t.safetensors");
}

}  // namespace

TEST_CASE("safetensors: quantized weights round-trip bit for bit with PyTorch's dtypes") {
  struct Case {
    const char* format;
    const char* codes;
    const char* scales;
  };
  const Case cases[] = {{"mxfp4", "F4", "F8_E8M0"},          {"mxfp8_e4m3", "F8_E4M3", "F8_E8M0"},
                        {"mxfp8_e5m2", "F8_E5M2", "F8_E8M0"}, {"nvfp4", "F4", "F8_E4M3"},
                        {"mxint8", "I8", "F8_E8M0"},          {"int8@channel", "I8", "F32"},
                        {"mxfp6_e2m3", "U8", "F8_E8M0"},      {"int4@g32", "U8", "F32"},
                        {"fp8_e4m3", "F8_E4M3", ""},          {"bf16", "BF16", ""}};
  qcast::SafetensorsFile file;
  std::vector<qcast::PackedWeight> written;
  std::uint32_t seed = 1;
  for (const Case& c : cases) {
    written.push_back(weight(std::string("layer.") + c.format + ".weight", c.format, 6, 64, seed++));
    qcast::add_quantized_weight(file, written.back());
  }
  file.tensors.push_back({"layer.bias", "F32", {2}, std::vector<std::uint8_t>(8, 0x3f)});
  const std::string b = bytes_of(file);
  // The header: 8-byte little-endian size, then JSON padded so that the data starts 8-aligned.
  std::uint64_t n = 0;
  std::memcpy(&n, b.data(), 8);
  CHECK(n % 8 == 0);
  CHECK(b[8] == '{');
  const qcast::SafetensorsFile back = parse(b);
  for (const Case& c : cases) {
    INFO(c.format);
    const std::string name = std::string("layer.") + c.format + ".weight";
    const auto* codes = back.find(name);
    REQUIRE(codes);
    CHECK(codes->dtype == c.codes);
    if (codes->dtype != "U8") CHECK(codes->shape == std::vector<std::int64_t>{6, 64});  // F4: 4-bit elements
    const auto* scales = back.find(name + "_scale");
    CHECK((scales ? scales->dtype : std::string()) == c.scales);
  }
  CHECK(back.find("layer.nvfp4.weight_scale_2")->dtype == "F32");
  CHECK(back.find("layer.nvfp4.weight_scale_2")->shape.empty());
  CHECK(back.find("layer.mxfp4.weight_scale")->shape == std::vector<std::int64_t>{6, 2});
  CHECK(back.find("layer.int8@channel.weight_scale")->shape == std::vector<std::int64_t>{6});
  CHECK(back.metadata.at("format") == "pt");
  const auto read = qcast::quantized_weights(back, "t.safetensors");
  REQUIRE(read.size() == written.size());  // the bias has no qcast metadata
  for (std::size_t i = 0; i < read.size(); ++i) {
    INFO(written[i].name);
    CHECK(read[i].name == written[i].name);
    CHECK(qcast::format_name(read[i].matrix.format) == qcast::format_name(written[i].matrix.format));
    CHECK(read[i].matrix.codes == written[i].matrix.codes);
    CHECK(read[i].matrix.scales == written[i].matrix.scales);
    CHECK(read[i].matrix.tensor_scale == written[i].matrix.tensor_scale);
    CHECK(qcast::decode_weight(read[i]) == qcast::decode_weight(written[i]));
  }
}

TEST_CASE("safetensors: a damaged file is an error that names it and says what is wrong") {
  qcast::SafetensorsFile file;
  qcast::add_quantized_weight(file, weight("w", "mxfp4", 2, 32, 7));
  const std::string good = bytes_of(file);
  REQUIRE_NOTHROW(parse(good));
  auto fails = [](const std::string& b, const std::string& says) {
    INFO(says);
    try {
      const auto f = parse(b);
      (void)qcast::quantized_weights(f, "t.safetensors");
      FAIL("no error");
    } catch (const qcast::SafetensorsError& e) {
      const std::string m = e.what();
      CHECK(m.rfind("t.safetensors: ", 0) == 0);
      CHECK(m.find(says) != std::string::npos);
    }
  };
  fails(good.substr(0, 5), "shorter than its 8-byte header size");
  fails(good.substr(0, good.size() - 1), "outside the");  // the last tensor is cut
  fails(good + "x", "bytes after the last tensor");
  std::string huge = good;
  huge[5] = 1;  // a header size of 2^40 + ...
  fails(huge, "header of");
  std::string text = good;
  text[8] = '[';
  fails(text, "not valid JSON");
  auto with_header = [&](const std::string& json, const std::string& data) {
    std::string h = json;
    h.append((8 - h.size() % 8) % 8, ' ');
    std::string b(8, '\0');
    for (int i = 0; i < 8; ++i) b[std::size_t(i)] = char((std::uint64_t(h.size()) >> (8 * i)) & 0xff);
    return b + h + data;
  };
  fails(with_header(R"({"a":{"dtype":"Q7","shape":[1],"data_offsets":[0,1]}})", "x"), "unknown dtype");
  fails(with_header(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}})",
                    std::string(6, 'x')),
        "overlap or leave a hole");
  fails(with_header(R"({"a":{"dtype":"F4","shape":[3],"data_offsets":[0,1]}})", "x"), "are not whole bytes");
  fails(with_header(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", "xxxx"), "not a non-negative integer");
  fails(with_header(R"({"a":{"dtype":"F32","shape":[1099511627776,1099511627776],"data_offsets":[0,4]}})", "xxxx"),
        "tensor 'a'");
  fails(with_header(R"({"__metadata__":{"qcast:a":"{"},"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})", "x"),
        "its metadata is not what qcast writes");
  fails(with_header(R"({"__metadata__":{"qcast:a":"{\"format\":\"mxfp4\",\"shape\":[2,32],\"layout\":\"rows\",\"matrix\":[2,32]}"},"a":{"dtype":"U8","shape":[32],"data_offsets":[0,32]}})",
                    std::string(32, 'x')),
        "tensor 'a_scale' is missing");
}
