// The worker pool behind the kernels' threads (src/cpu/worker_pool.hpp): every task runs exactly
// once whatever the thread count, exceptions reach the caller after the other tasks ran, calls may
// nest and come from several threads at once, and a child process after fork() still gets its casts
// done (it has none of the parent's workers).
#include <catch2/catch.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <chrono>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "qcast/format_names.hpp"
#include "qcast/kernels.hpp"
#include "src/cpu/worker_pool.hpp"

namespace {

using qcast::kernels::run_tasks;

// Counts the runs of each task.
struct Counted {
  std::vector<std::atomic<int>> runs;
  explicit Counted(int n) : runs(std::size_t(n)) {}
  static void task(void* c, int k) { ++static_cast<Counted*>(c)->runs[std::size_t(k)]; }
  bool each_once() const {
    for (const auto& r : runs)
      if (r.load() != 1) return false;
    return true;
  }
};

}  // namespace

TEST_CASE("worker pool: every task runs exactly once for every thread count", "[pool]") {
  for (int threads : {1, 2, 3, 8, 33}) {
    for (int count : {1, 2, 3, 7, 16, 100}) {
      for (int repeat = 0; repeat < 20; ++repeat) {
        Counted c(count);
        run_tasks(count, threads, &Counted::task, &c);
        INFO("threads " << threads << ", tasks " << count);
        REQUIRE(c.each_once());
      }
    }
  }
  Counted none(0);
  run_tasks(0, 4, &Counted::task, &none);  // nothing to run, nothing touched
}

TEST_CASE("worker pool: tasks run on several threads when asked", "[pool]") {
  // Two tasks that each wait for the other to start can only both finish if they run at once, on
  // the caller and a worker (the caller takes a task the worker has not; one that waits too long
  // gives up, so a failure ends the test instead of hanging it).
  std::atomic<int> started{0};
  std::atomic<int> met{0};
  auto meet = [&] {
    ++started;
    for (int i = 0; i < 2000 && started.load() < 2; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    if (started.load() >= 2) ++met;
  };
  run_tasks(2, 2, [](void* c, int) { (*static_cast<decltype(meet)*>(c))(); }, &meet);
  REQUIRE(met.load() == 2);
}

TEST_CASE("worker pool: the first exception reaches the caller after every task ran", "[pool]") {
  for (int threads : {1, 2, 4}) {
    Counted c(12);
    auto task = [](void* p, int k) {
      Counted::task(p, k);
      if (k % 5 == 3) throw std::runtime_error("task " + std::to_string(k));
    };
    INFO("threads " << threads);
    REQUIRE_THROWS_WITH(run_tasks(12, threads, task, &c), Catch::Matchers::StartsWith("task "));
    REQUIRE(c.each_once());
  }
}

TEST_CASE("worker pool: calls nest and come from several threads at once", "[pool]") {
  // Each outer task runs an inner call of its own; four threads do so at the same time.
  struct Outer {
    std::vector<Counted> inner;
    Outer() {
      for (int k = 0; k < 6; ++k) inner.emplace_back(5);
    }
  };
  auto outer_task = [](void* p, int k) {
    auto& inner = static_cast<Outer*>(p)->inner[std::size_t(k)];
    run_tasks(5, 3, &Counted::task, &inner);
  };
  std::vector<Outer> outers(4);
  std::vector<std::thread> callers;
  std::atomic<bool> ok{true};
  for (auto& o : outers) {
    callers.emplace_back([&ok, &o, outer_task] {
      for (int repeat = 0; repeat < 50; ++repeat) {
        for (auto& c : o.inner)
          for (auto& r : c.runs) r = 0;
        run_tasks(6, 2, outer_task, &o);
        for (const auto& c : o.inner)
          if (!c.each_once()) ok = false;
      }
    });
  }
  for (auto& t : callers) t.join();
  REQUIRE(ok.load());
}

TEST_CASE("worker pool: a child process after fork() casts on threads of its own", "[pool]") {
  const qcast::Format f = qcast::parse_format("nvfp4");
  const qcast::Shape shape{512, 1024};  // large enough for two threads
  std::vector<float> x(512 * 1024);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = float(int(i % 97) - 48) / 7.0f;
  std::vector<float> expected(x.size());
  qcast::kernels::cast(x.data(), expected.data(), shape, f, {}, 2);  // the parent's pool is running now
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    std::vector<float> got(x.size());
    qcast::kernels::cast(x.data(), got.data(), shape, f, {}, 2);
    _exit(std::memcmp(got.data(), expected.data(), got.size() * sizeof(float)) == 0 ? 0 : 1);
  }
  int status = 0;
  REQUIRE(waitpid(child, &status, 0) == child);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
}
