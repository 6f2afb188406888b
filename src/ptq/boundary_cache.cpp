// Boundary state in memory and on disk (boundary_cache.hpp). A spilled state is one file written by
// LibTorch's pickler, which keeps views of one storage sharing it when read back.
#include "boundary_cache.hpp"

#include <c10/core/Storage.h>
#include <torch/csrc/jit/serialization/pickle.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <stdexcept>

namespace qcast::ptq::detail {

std::int64_t default_cache_bytes() {
  std::ifstream f("/proc/meminfo");
  std::string key;
  long long kb = 0;
  std::string unit;
  while (f >> key >> kb >> unit)
    if (key == "MemAvailable:") return std::int64_t(kb) * 1024 / 2;
  return std::int64_t(4) << 30;
}

std::int64_t BoundaryCache::bytes_of(const Env& env) {
  std::set<const void*> seen;
  std::int64_t total = 0;
  for (const auto& [id, v] : env) {
    v.visit([&](const c10::IValue& x) {
      if (x.isTensor()) {
        const at::Tensor& t = x.toTensor();
        if (t.defined() && t.has_storage() && seen.insert(t.storage().unsafeGetStorageImpl()).second)
          total += std::int64_t(t.storage().nbytes());
      }
      return false;  // keep visiting the elements of containers
    });
  }
  return total;
}

BoundaryCache::BoundaryCache(std::size_t slots, std::int64_t budget_bytes, std::string spill_parent)
    : slots_(slots), budget_(budget_bytes), parent_(std::move(spill_parent)) {}

BoundaryCache::~BoundaryCache() {
  // Every file this cache wrote, then its folder (std::filesystem::remove_all is avoided: the copy
  // that libtorch exports can crash).
  for (std::size_t i = 0; i < slots_.size(); ++i)
    if (slots_[i].on_disk) std::remove(path_of(i).c_str());
  if (!folder_.empty()) ::rmdir(folder_.c_str());
}

std::string BoundaryCache::path_of(std::size_t slot) const { return folder_ + "/state" + std::to_string(slot) + ".pt"; }

void BoundaryCache::spill(std::size_t slot, const Env& env) {
  auto fail = [&](const std::string& why) {
    return std::runtime_error("the calibration's boundary state does not fit in the memory budget of " +
                              std::to_string(budget_ >> 20) + " MiB (--cache-mb) and cannot be written to " +
                              (folder_.empty() ? parent_ : folder_) + ": " + why);
  };
  if (folder_.empty()) {
    std::string parent = parent_.empty() ? std::filesystem::temp_directory_path().string() : parent_;
    std::string templ = parent + "/qcast-boundary-XXXXXX";
    if (!::mkdtemp(templ.data())) {
      parent_ = parent;
      throw fail("cannot make a temporary folder there");
    }
    folder_ = templ;
  }
  c10::impl::GenericList ids(c10::IntType::get()), values(c10::AnyType::get());
  for (const auto& [id, v] : env) {
    ids.push_back(static_cast<std::int64_t>(id));
    values.push_back(v);
  }
  std::vector<char> bytes;
  try {
    bytes = torch::jit::pickle_save(c10::ivalue::Tuple::create({ids, values}));
  } catch (const std::exception& e) {
    const std::string what = e.what();
    throw fail("a value cannot be serialized (" + what.substr(0, what.find('\n')) + ")");
  }
  const std::string path = path_of(slot);
  {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f.write(bytes.data(), std::streamsize(bytes.size()));
    f.flush();
    if (!f) {
      f.close();
      std::remove(path.c_str());
      throw fail("writing " + std::to_string(bytes.size() >> 20) + " MiB failed (disk full?)");
    }
  }
  Slot& s = slots_[slot];
  s.on_disk = true;
  s.file_bytes = std::int64_t(bytes.size());
  spilled_ += s.file_bytes;
  peak_spilled_ = std::max(peak_spilled_, spilled_);
  ++spill_writes_;
}

Env BoundaryCache::take(std::size_t slot) {
  Slot& s = slots_.at(slot);
  if (!s.on_disk) {
    resident_ -= s.bytes;
    s.bytes = 0;
    return std::move(s.env);
  }
  const std::string path = path_of(slot);
  std::ifstream f(path, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (!f.good() && !f.eof()) throw std::runtime_error(path + ": cannot read back the spilled boundary state");
  const c10::IValue v = torch::jit::pickle_load(bytes);
  std::remove(path.c_str());
  s.on_disk = false;
  spilled_ -= s.file_bytes;
  s.file_bytes = 0;
  const auto& parts = v.toTupleRef().elements();
  const auto ids = parts.at(0).toList();
  const auto values = parts.at(1).toList();
  Env env;
  for (std::size_t i = 0; i < ids.size(); ++i) env.emplace(std::size_t(ids.get(i).toInt()), values.get(i));
  return env;
}

void BoundaryCache::put(std::size_t slot, Env env) {
  Slot& s = slots_.at(slot);
  const std::int64_t b = bytes_of(env);
  if (resident_ + b <= budget_) {
    s.env = std::move(env);
    s.bytes = b;
    resident_ += b;
    peak_resident_ = std::max(peak_resident_, resident_);
    return;
  }
  spill(slot, env);
}

}  // namespace qcast::ptq::detail
