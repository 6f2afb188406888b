#include <catch2/catch.hpp>

#include <string>

#include "qcast/format_names.hpp"

TEST_CASE("every named format prints as its name and parses back") {
  for (const auto& n : qcast::named_formats()) {
    INFO(n.name);
    CHECK(qcast::format_name(n.format) == n.name);
    CHECK(qcast::parse_format(n.name) == n.format);
    CHECK(n.format.invalid_reason().empty());
  }
}

TEST_CASE("intN, intN@gK and intN@channel for every N") {
  for (int n = 2; n <= 8; ++n) {
    const std::string i = "int" + std::to_string(n);
    CHECK(qcast::parse_format(i).granularity == qcast::Granularity::tensor);
    CHECK(qcast::parse_format(i + "@g48").block_size == 48);
    CHECK(qcast::parse_format(i + "@channel").axis == 0);
    CHECK(qcast::parse_format(i).element.integer_max() == (1 << (n - 1)) - 1);
  }
}

TEST_CASE("generic names round-trip") {
  for (const char* s : {"e3m4", "e3m4fn", "e5m2fnuzb15", "ue5m3", "e4m3nospb5", "int4@g128:axis=0",
                        "uint8", "int8f6@g32:scale=e8m0", "e2m1@g32:scale=e8m0:rule=rceil", "e2m1@g32:scale=e8m0:rule=ceil",
                        "fp8_e4m3@channel", "fp8_e4m3@tensor", "e2m1@g16:scale=ue4m3", "e2m1@g16+tensor",
                        "e2m1@g16+tensor:scale=fp16", "int2@g32+tensor:scale=fp32", "fp8_e4m3@g32:scale=e8m0:rule=even", "int8@none", "e8m0", "e5m0b20",
                        "fp6_e2m3@g64:scale=e8m0", "e2m1@g32:scale=e8m0:axis=-2", "fp8_e4m3@channel:axis=1"}) {
    INFO(s);
    const qcast::Format f = qcast::parse_format(s);
    CHECK(qcast::parse_format(qcast::format_name(f)) == f);
  }
  CHECK(qcast::format_name(qcast::parse_format("fp4_e2m1@g32:scale=e8m0")) == "mxfp4");
  CHECK(qcast::format_name(qcast::parse_format("fp4_e2m1@g16+tensor")) == "nvfp4");
  CHECK(qcast::format_name(qcast::parse_format("int4@g16+tensor")) == "nvint4");
  CHECK(qcast::format_name(qcast::parse_format("int4@g16+tensor:scale=ue4m3")) == "nvint4");
  CHECK(qcast::parse_format("nvint4").bits_per_element() == 4.5);
  CHECK(qcast::format_name(qcast::parse_format("nvint4:axis=-3")) == "int4@g16+tensor:axis=-3");
  CHECK(qcast::format_name(qcast::parse_format("e4m3fnb7")) == "fp8_e4m3");
  CHECK(qcast::format_name(qcast::parse_format("e4m3fn")) == "fp8_e4m3");
  CHECK(qcast::parse_format("e2m1").element.specials == qcast::Specials::ieee);  // generic default
  CHECK(qcast::format_name(qcast::parse_format("int4@g128:axis=-1")) == "int4@g128");
  CHECK(qcast::format_name(qcast::parse_format("e2m1@g16+tensor:scale=ue4m3:axis=0")) == "e2m1@g16+tensor:axis=0");
  CHECK(qcast::format_name(qcast::parse_format("int2@g32+tensor:scale=fp32")) == "int2@g32+tensor:scale=fp32");
}

TEST_CASE("every valid combination of element, granularity, scale, rule and axis round-trips") {
  int valid = 0;
  for (const char* element : {"fp4_e2m1", "e2m1", "fp8_e4m3", "e4m3fnb16", "int2", "int4f3", "int8", "uint4", "bf16"})
    for (const char* granularity : {"", "@none", "@tensor", "@channel", "@g16", "@g16+tensor"})
      for (const char* scale : {"", ":scale=fp32", ":scale=ue4m3", ":scale=e8m0", ":scale=bf16", ":scale=fp16"})
        for (const char* rule : {"", ":rule=amax", ":rule=rceil"})
          for (const char* axis : {"", ":axis=0", ":axis=-1", ":axis=1"}) {
            const std::string name = std::string(element) + granularity + scale + rule + axis;
            qcast::Format f;
            try {
              f = qcast::parse_format(name);
            } catch (const qcast::FormatError&) {
              continue;
            }
            ++valid;
            INFO(name << " -> " << qcast::format_name(f));
            CHECK(qcast::parse_format(qcast::format_name(f)) == f);
          }
  CHECK(valid > 300);
}

TEST_CASE("a two-level format whose max_elem * max_scale overflows binary32 is rejected") {
  // s_t = amax_t / float(max_elem * max_scale) would be 0 for every tensor (docs/design/0001).
  for (const char* s : {"int8@g16+tensor:scale=fp32", "fp4_e2m1@g16+tensor:scale=bf16", "fp6_e2m3@g16+tensor:scale=bf16",
                        "fp8_e4m3@g32+tensor:scale=fp32"}) {
    INFO(s);
    CHECK_THROWS_WITH(qcast::parse_format(s), Catch::Matchers::Contains("max_elem * max_scale"));
  }
  // Finite products stay valid, however close to FLT_MAX (int2: max 1; e4m3fnb16: max 0.875).
  for (const char* s : {"int2@g32+tensor:scale=fp32", "e4m3fnb16@g16+tensor:scale=fp32", "e4m3fnb16@g16+tensor:scale=bf16",
                        "fp4_e2m1@g16+tensor:scale=fp16"}) {
    INFO(s);
    CHECK_NOTHROW(qcast::parse_format(s));
  }
}

TEST_CASE("bad names are errors that list the valid names") {
  for (const char* s : {"fp9", "mxfp3", "int1", "int4@g0", "e2m1@g32:scale=e8m0:rule=amax", "e2m1@g32:rule=floor",
                        "fp8_e4m3:axis=1", "int4@gx", "e9m2", "e4m3@g16+block", "int4@tensor:axis=0", "", "e2m1@",
                        "e2m1@g32:color=red", "ue2m1fnuz"}) {
    INFO(s);
    try {
      qcast::parse_format(s);
      FAIL("accepted");
    } catch (const qcast::FormatError& e) {
      const std::string what = e.what();
      CHECK(what.find("unknown format") != std::string::npos);
      CHECK(what.find("mxfp4") != std::string::npos);
      CHECK(what.find("nvfp4") != std::string::npos);
    }
  }
}

TEST_CASE("effective bits count the scales") {
  CHECK(qcast::parse_format("mxfp4").bits_per_element() == 4.25);
  CHECK(qcast::parse_format("nvfp4").bits_per_element() == 4.5);
  CHECK(qcast::parse_format("int4@g128").bits_per_element() == 4.25);
  CHECK(qcast::parse_format("fp8_e4m3").bits_per_element() == 8);
}

TEST_CASE("named formats take the generic keys; long names are cut in messages; counts have one spelling") {
  qcast::Format f = qcast::parse_format("mxfp4:axis=0");
  qcast::Format want = qcast::parse_format("mxfp4");
  want.axis = 0;
  CHECK(f == want);
  CHECK(qcast::parse_format(qcast::format_name(f)) == f);
  CHECK(qcast::parse_format("nvfp4:axis=-2").axis == -2);
  CHECK_THROWS_WITH(qcast::parse_format("mxfp4:axis=q"), Catch::Contains("axis must be an integer"));
  CHECK_THROWS_WITH(qcast::parse_format("fp8_e4m3:axis=0"), Catch::Contains("a direct cast takes no"));
  // A 100,000-character name: quoted up to 64 characters, its length given.
  const std::string long_name(100000, 'x');
  try {
    qcast::parse_format(long_name);
    FAIL("accepted");
  } catch (const qcast::FormatError& e) {
    const std::string m = e.what();
    CHECK(m.size() < 2048);
    CHECK(m.find("100000 characters") != std::string::npos);
  }
  // Leading zeros would give one format two names ("int4@g032", "ue04m3").
  CHECK_THROWS(qcast::parse_format("int4@g032"));
  CHECK_THROWS(qcast::parse_format("fp4_e2m1@g16:scale=ue04m3"));
  // ue4m3 with IEEE specials is not the named ue4m3 (no NaN-only encoding): its name spells the
  // bias out so that it parses back to itself (found by the format_name fuzz target).
  const qcast::Format ieee = qcast::parse_format("fp4_e2m1@g15:scale=ue4m3b7");
  CHECK(ieee.scale != qcast::parse_format("fp4_e2m1@g15:scale=ue4m3").scale);
  CHECK(qcast::parse_format(qcast::format_name(ieee)) == ieee);
}
