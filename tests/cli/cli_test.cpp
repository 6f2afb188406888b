// The qcast tool end to end: exit codes, messages, bit-exact outputs, atomic writes.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdlib>
#include <sys/wait.h>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>
#include <string>

#include <nlohmann/json.hpp>

#include "../core/bits.hpp"
#include "oracle.hpp"
#include "qcast/npy.hpp"

namespace fs = std::filesystem;

namespace {

struct Run {
  int code;
  std::string output;
};

fs::path scratch() {
  const fs::path d = fs::temp_directory_path() / "qcast_cli_test";
  fs::create_directories(d);
  return d;
}

Run run(const std::string& args) {
  const fs::path log = scratch() / "out.txt";
  const std::string cmd = std::string(QCAST_CLI) + " " + args + " > " + log.string() + " 2>&1";
  const int status = std::system(cmd.c_str());
  std::ifstream f(log);
  std::stringstream s;
  s << f.rdbuf();
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, s.str()};
}

// The lines of a command's output that are JSON objects (bench --json prints one per format),
// parsed (a line that is not valid JSON fails the test).
std::vector<nlohmann::json> json_objects(const std::string& output) {
  std::istringstream lines(output);
  std::vector<nlohmann::json> objects;
  std::string line;
  while (std::getline(lines, line))
    if (!line.empty() && line[0] == '{') objects.push_back(nlohmann::json::parse(line));
  return objects;
}

}  // namespace

TEST_CASE("qcast cast is bit-exact with the oracle and keeps the shape") {
  const fs::path in = scratch() / "in.npy", out = scratch() / "out.npy";
  std::vector<float> x(3 * 5 * 40);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = std::sin(float(i)) * float(i % 13) * 10.0f;
  qcast::write_npy(in.string(), {3, 5, 40}, x.data());
  const Run r = run("cast --format mxfp4 " + in.string() + " " + out.string());
  INFO(r.output);
  REQUIRE(r.code == 0);
  const auto y = qcast::read_npy(out.string());
  CHECK(y.shape == qcast::Shape{3, 5, 40});
  const auto want = oracle::mx(x, 15, 40, oracle::e2m1());
  const auto got = y.to_float();
  std::size_t bad = 0;
  for (std::size_t i = 0; i < x.size(); ++i) bad += !qcast_test::same(got[i], want[i]);
  CHECK(bad == 0);
}

TEST_CASE("qcast cast --tensor-amax gives NVFP4 a static tensor scale, bit-exact with the oracle") {
  const fs::path in = scratch() / "amax_in.npy", out = scratch() / "amax_out.npy";
  std::vector<float> x(6 * 48);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = std::sin(float(i)) * float(i % 11);
  qcast::write_npy(in.string(), {6, 48}, x.data());
  for (const char* amax : {"2.5", "10", "1e3"}) {
    INFO(amax);
    const Run r = run(std::string("cast --format nvfp4 --tensor-amax ") + amax + " " + in.string() + " " + out.string());
    INFO(r.output);
    REQUIRE(r.code == 0);
    const auto want = oracle::nvfp4(x, 6, 48, std::stof(amax));
    const auto got = qcast::read_npy(out.string()).to_float();
    std::size_t bad = 0;
    for (std::size_t i = 0; i < x.size(); ++i) bad += !qcast_test::same(got[i], want[i]);
    CHECK(bad == 0);
  }
  fs::remove(out);
  Run r = run("cast --format mxfp4 --tensor-amax 2 " + in.string() + " " + out.string());
  CHECK(r.code == 2);
  CHECK(r.output.find("mxfp4 has no tensor scale") != std::string::npos);
  r = run("cast --format nvfp4 --tensor-amax 0 " + in.string() + " " + out.string());
  CHECK(r.code == 2);
  CHECK(r.output.find("finite and > 0") != std::string::npos);
  r = run("cast --format nvfp4 --tensor-amax big " + in.string() + " " + out.string());
  CHECK(r.code == 2);
  CHECK(r.output.find("--tensor-amax needs a finite number, got 'big'") != std::string::npos);
  CHECK(!fs::exists(out));
}

TEST_CASE("qcast cast reads float16 input") {
  const fs::path in = scratch() / "in16.npy", out = scratch() / "out16.npy";
  {
    std::ofstream f(in, std::ios::binary);
    const std::string h = "{'descr': '<f2', 'fortran_order': False, 'shape': (2,), }          \n";
    f << "\x93NUMPY" << char(1) << char(0) << char(h.size()) << char(0) << h;
    const unsigned char data[4] = {0x00, 0x3E, 0x00, 0xC5};  // 1.5, -5.0
    f.write(reinterpret_cast<const char*>(data), 4);
  }
  const Run r = run("cast --format fp4_e2m1 " + in.string() + " " + out.string());
  INFO(r.output);
  REQUIRE(r.code == 0);
  CHECK(qcast::read_npy(out.string()).to_float() == std::vector<float>{1.5f, -4.0f});
}

TEST_CASE("qcast cast errors are clear and leave no output") {
  const fs::path in = scratch() / "e_in.npy", out = scratch() / "e_out.npy";
  std::vector<float> x(8, 1.0f);
  qcast::write_npy(in.string(), {2, 4}, x.data());
  fs::remove(out);

  Run r = run("cast --format mxfp3 " + in.string() + " " + out.string());
  CHECK(r.code != 0);
  CHECK(r.output.find("unknown format 'mxfp3'") != std::string::npos);
  CHECK(r.output.find("mxfp4") != std::string::npos);

  r = run("cast --format mxfp4 --axis 5 " + in.string() + " " + out.string());
  CHECK(r.code != 0);
  CHECK(r.output.find("axis 5 is out of range") != std::string::npos);

  r = run("cast --format fp8_e4m3 --axis 0 " + in.string() + " " + out.string());
  CHECK(r.code != 0);
  CHECK(r.output.find("has no axis") != std::string::npos);

  r = run("cast --format mxfp4 --round up " + in.string() + " " + out.string());
  CHECK(r.code != 0);
  CHECK(r.output.find("even, away, zero or stochastic") != std::string::npos);

  r = run("cast --format mxfp4 " + (scratch() / "missing.npy").string() + " " + out.string());
  CHECK(r.code != 0);
  CHECK(r.output.find("missing.npy: cannot open") != std::string::npos);

  const fs::path corrupt = scratch() / "corrupt.npy";
  std::ofstream(corrupt) << "garbage";
  r = run("cast --format mxfp4 " + corrupt.string() + " " + out.string());
  CHECK(r.code != 0);
  CHECK(r.output.find("corrupt.npy: not a .npy file") != std::string::npos);
  CHECK(!fs::exists(out));

  r = run("cast --format mxfp4 " + in.string() + " " + in.string());
  CHECK(r.code != 0);
  CHECK(r.output.find("is an input") != std::string::npos);
  CHECK(qcast::read_npy(in.string()).to_float() == x);  // the input is untouched

  r = run("cast " + in.string() + " " + out.string());
  CHECK(r.code == 2);
  CHECK(r.output.find("--format is required") != std::string::npos);

  r = run("frobnicate");
  CHECK(r.code == 2);
  CHECK(r.output.find("valid: formats, cast, bench") != std::string::npos);
}

TEST_CASE("qcast formats and --help") {
  Run r = run("formats");
  REQUIRE(r.code == 0);
  for (const char* name : {"fp8_e4m3 ", "fp8_e5m2fnuz", "mxfp6_e3m2", "mxint8", "nvfp4", "int8@channel", "int4@g128"})
    CHECK(r.output.find(name) != std::string::npos);
  CHECK(r.output.find("57344") != std::string::npos);
  for (const char* cmd : {"--help", "cast --help", "formats --help"}) {
    r = run(cmd);
    INFO(cmd);
    CHECK(r.code == 0);
    CHECK(r.output.find("usage: qcast") != std::string::npos);
  }
}

TEST_CASE("qcast bench prints one JSON object per format for each op, and rejects unknown ops") {
  for (const char* op : {"cast", "encode", "decode"}) {
    const Run r = run(std::string("bench --formats mxfp4,int8 --elements 65536 --repeats 1 --threads 1 --json --op ") + op);
    INFO(op << "\n" << r.output);
    REQUIRE(r.code == 0);
    const auto objects = json_objects(r.output);
    for (const auto& j : objects) {
      CHECK(j.at("op") == op);
      for (const char* key : {"gbps", "memcpy_gbps", "ratio_memcpy", "scalar_gbps"}) CHECK(j.at(key).is_number());
      CHECK(j.at("gbps").get<double>() > 0);
    }
    CHECK(objects.size() == 2);
  }
  const Run bad = run("bench --op squash");
  CHECK(bad.code == 2);
  CHECK(bad.output.find("--op must be cast, encode or decode") != std::string::npos);
}

TEST_CASE("qcast bench --static-tensor-amax gives two-level formats the input's amax and says so") {
  for (const char* op : {"cast", "encode"}) {
    const Run r = run(std::string("bench --formats nvfp4,mxfp4 --elements 65536 --repeats 1 --threads 1 --json "
                                  "--static-tensor-amax --op ") + op);
    INFO(op << "\n" << r.output);
    REQUIRE(r.code == 0);
    const auto objects = json_objects(r.output);
    REQUIRE(objects.size() == 2);
    CHECK(objects[0].at("tensor_amax") == "given");
    CHECK(objects[0].at("aten_gbps").is_null());  // the ATen composition measures amax
    CHECK(objects[1].at("tensor_amax").is_null());
  }
  const Run r = run("bench --formats nvfp4 --elements 65536 --repeats 1 --threads 1 --json");
  REQUIRE(r.code == 0);
  REQUIRE(json_objects(r.output).size() == 1);
  CHECK(json_objects(r.output)[0].at("tensor_amax") == "measured");
}

TEST_CASE("qcast bench --dtype casts, encodes and decodes 16-bit tensors, and rejects other types") {
  for (const char* dtype : {"bf16", "f16"}) {
    const Run r = run(std::string("bench --formats mxfp4,int8@channel --elements 65536 --repeats 1 --threads 1 --json --dtype ") +
                      dtype);
    INFO(dtype << "\n" << r.output);
    REQUIRE(r.code == 0);
    const auto objects = json_objects(r.output);
    for (const auto& j : objects) {
      CHECK(j.at("dtype") == (dtype == std::string("bf16") ? "bfloat16" : "float16"));
      CHECK(j.at("scalar_gbps").is_null());  // not measured for 16-bit tensors
    }
    CHECK(objects.size() == 2);
  }
  const Run bad = run("bench --dtype f64");
  CHECK(bad.code == 2);
  CHECK(bad.output.find("--dtype must be f32, bf16 or f16") != std::string::npos);
  for (const char* op : {"encode", "decode"}) {
    const Run r = run(std::string("bench --formats mxfp4 --elements 65536 --repeats 1 --threads 1 --json --dtype bf16 --op ") +
                      op);
    INFO(op << "\n" << r.output);
    REQUIRE(r.code == 0);
    REQUIRE(json_objects(r.output).size() == 1);
    CHECK(json_objects(r.output)[0].at("op") == op);
    CHECK(json_objects(r.output)[0].at("dtype") == "bfloat16");
  }
}

TEST_CASE("qcast bench --shape measures a tensor of that shape and rejects malformed shapes") {
  const Run r = run("bench --shape 4,16,64 --formats int8@channel:axis=1,int4@g32:axis=0 --repeats 1 --threads 1 --json");
  INFO(r.output);
  REQUIRE(r.code == 0);
  const auto objects = json_objects(r.output);
  REQUIRE(objects.size() == 2);
  for (const auto& j : objects) {
    CHECK(j.at("elements") == 4096);
    CHECK(j.at("shape") == nlohmann::json::array({4, 16, 64}));
    CHECK(j.at("aten_gbps").is_null());  // the ATen compositions are 2-D only
  }
  for (const char* shape : {"4,0,64", "4,x", ""}) {
    const Run bad = run(std::string("bench --shape '") + shape + "'");
    INFO(shape << "\n" << bad.output);
    CHECK(bad.code == 2);
    CHECK((bad.output.find("--shape needs an integer from 1 to") != std::string::npos ||
           bad.output.find("--shape needs at least one dimension") != std::string::npos));
  }
}

TEST_CASE("qcast bench --device: cuda measures the GPU or says why it cannot; other devices are rejected") {
  const Run bad = run("bench --device tpu");
  CHECK(bad.code == 2);
  CHECK(bad.output.find("--device must be cpu or cuda") != std::string::npos);
  const Run r = run("bench --device cuda --formats mxfp4,fp8_e4m3 --elements 65536 --repeats 1 --json");
  INFO(r.output);
  if (r.code == 0) {  // a GPU: one JSON object per format, measured there
    const auto objects = json_objects(r.output);
    REQUIRE(objects.size() == 2);
    CHECK(objects[0].at("device") == "cuda");
    CHECK(objects[1].at("format") == "fp8_e4m3");
  } else {  // no device, or a build without the CUDA kernels: the reason, not a crash
    CHECK(r.code != 0);
    CHECK((r.output.find("no usable CUDA device") != std::string::npos ||
           r.output.find("built without the CUDA kernels") != std::string::npos));
  }
}

TEST_CASE("qcast's command line: --opt=value, --version, one exit-code scheme, JSON lists") {
  const fs::path in = scratch() / "conv_in.npy", a = scratch() / "conv_a.npy", b = scratch() / "conv_b.npy";
  std::vector<float> x(64);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = float(i) * 0.37f - 11.0f;
  qcast::write_npy(in.string(), {64}, x.data());
  // "--opt=value" and "--opt value" give the same bits.
  REQUIRE(run("cast --format=mxfp4 --round=away " + in.string() + " " + a.string()).code == 0);
  REQUIRE(run("cast --format mxfp4 --round away " + in.string() + " " + b.string()).code == 0);
  CHECK(qcast::read_npy(a.string()).to_float() == qcast::read_npy(b.string()).to_float());
  CHECK(qcast::read_npy(a.string()).to_float() != x);

  Run r = run("--version");
  CHECK(r.code == 0);
  CHECK(r.output.find("qcast 0.") == 0);
  // Usage errors exit 2, whatever their kind: an unknown option, a value out of range, an unknown
  // format, a contradiction, a missing value; a runtime error (a missing file) exits 1.
  for (const char* usage : {"cast --frobnicate", "cast --format mxfp3 a.npy b.npy", "cast --format mxfp4 --axis",
                            "cast --format mxfp4 --saturate --no-saturate a.npy b.npy", "bench --threads 0",
                            "formats --json --table", "--version extra"}) {
    r = run(usage);
    INFO(usage << "\n" << r.output);
    CHECK(r.code == 2);
  }
  r = run("cast --format mxfp4 " + (scratch() / "absent.npy").string() + " " + a.string());
  CHECK(r.code == 1);
  for (const char* help : {"--help", "cast --help", "bench --help", "formats --help"}) {
    r = run(help);
    INFO(help);
    CHECK(r.code == 0);
    CHECK(r.output.find("2 usage error") != std::string::npos);
  }

  // formats --json: every named format, numbers exact.
  r = run("formats --json");
  REQUIRE(r.code == 0);
  const auto all = nlohmann::json::parse(r.output);
  REQUIRE(all.is_array());
  CHECK(all.size() == qcast::named_formats().size());
  bool saw_mxfp4 = false;
  for (const auto& f : all) {
    if (f.at("name") != "mxfp4") continue;
    saw_mxfp4 = true;
    CHECK(f.at("bits") == 4);
    CHECK(f.at("block_size") == 32);
    CHECK(f.at("max") == 6.0);
    CHECK(f.at("bits_per_element") == 4.25);
    CHECK(f.at("scale") == "e8m0");
  }
  CHECK(saw_mxfp4);
}
