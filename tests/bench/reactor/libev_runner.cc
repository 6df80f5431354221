#include <ev.h>

#include <memory>

#include "absl/strings/str_cat.h"
#include "tests/bench/reactor/runners.h"

namespace fanin::bench {
namespace {

class LibevRunner final : public Runner {
 public:
  explicit LibevRunner(unsigned int backend) : backend_(backend) {}

  ~LibevRunner() override {
    if (loop_ == nullptr) return;
    for (int i = 0; i < armed_; ++i) ev_io_stop(loop_, &watchers_[i].io);
    ev_loop_destroy(loop_);
  }

  absl::Status Init() override {
    loop_ = ev_loop_new(backend_ | EVFLAG_NOENV);
    if (loop_ == nullptr) {
      return absl::UnavailableError(
          absl::StrCat("libev backend ", backend_, " unavailable"));
    }
    if (ev_backend(loop_) != backend_) {
      return absl::UnavailableError(absl::StrCat("libev picked backend ",
                                                 ev_backend(loop_),
                                                 " instead of ", backend_));
    }
    return absl::OkStatus();
  }

  absl::Status Arm(Chain* chain) override {
    chain_ = chain;
    watchers_ = std::make_unique<Watcher[]>(chain->size());
    for (int i = 0; i < chain->size(); ++i) {
      Watcher& w = watchers_[i];
      w.runner = this;
      w.index = i;
      ev_io_init(&w.io, &OnRead, chain->read_fd(i), EV_READ);
      ev_io_start(loop_, &w.io);
      ++armed_;
    }
    // ev_io_start() only queues the change; the backend syscalls happen in the
    // next iteration.
    ev_run(loop_, EVRUN_NOWAIT);
    return absl::OkStatus();
  }

  absl::Status Run() override {
    ev_run(loop_, 0);
    if (!chain_->done()) return absl::InternalError("ev_run() returned early");
    return absl::OkStatus();
  }

 private:
  // `io` first, so the ev_io* libev hands back is the Watcher*.
  struct Watcher {
    ev_io io;
    LibevRunner* runner;
    int index;
  };

  static void OnRead(struct ev_loop* loop, ev_io* io, int) {
    Watcher* w = reinterpret_cast<Watcher*>(io);
    if (w->runner->chain_->OnReadable(w->index)) ev_break(loop, EVBREAK_ALL);
  }

  const unsigned int backend_;
  struct ev_loop* loop_ = nullptr;
  Chain* chain_ = nullptr;
  std::unique_ptr<Watcher[]> watchers_;
  int armed_ = 0;
};

}  // namespace

std::unique_ptr<Runner> NewLibevRunner(unsigned int backend) {
  return std::make_unique<LibevRunner>(backend);
}

}  // namespace fanin::bench
