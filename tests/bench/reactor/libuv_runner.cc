#include <uv.h>

#include <memory>

#include "absl/strings/str_cat.h"
#include "tests/bench/reactor/runners.h"

namespace fanin::bench {
namespace {

class LibuvRunner final : public Runner {
 public:
  ~LibuvRunner() override {
    if (!loop_ready_) return;
    for (int i = 0; i < armed_; ++i) {
      uv_close(reinterpret_cast<uv_handle_t*>(&handles_[i].poll), nullptr);
    }
    // Closing completes in the loop; run it until no handle is left, then
    // release it.
    uv_run(&loop_, UV_RUN_DEFAULT);
    uv_loop_close(&loop_);
  }

  absl::Status Init() override {
    if (int rc = uv_loop_init(&loop_); rc != 0) {
      return absl::InternalError(
          absl::StrCat("uv_loop_init(): ", uv_strerror(rc)));
    }
    loop_ready_ = true;
    return absl::OkStatus();
  }

  absl::Status Arm(Chain* chain) override {
    chain_ = chain;
    handles_ = std::make_unique<Handle[]>(chain->size());
    for (int i = 0; i < chain->size(); ++i) {
      Handle& h = handles_[i];
      h.runner = this;
      h.index = i;
      if (int rc = uv_poll_init(&loop_, &h.poll, chain->read_fd(i)); rc != 0) {
        return absl::InternalError(absl::StrCat(
            "uv_poll_init() fd ", chain->read_fd(i), ": ", uv_strerror(rc)));
      }
      ++armed_;
      if (int rc = uv_poll_start(&h.poll, UV_READABLE, &OnPoll); rc != 0) {
        return absl::InternalError(absl::StrCat(
            "uv_poll_start() fd ", chain->read_fd(i), ": ", uv_strerror(rc)));
      }
    }
    // uv_poll_start() only queues the watcher; epoll_ctl happens in the next
    // iteration.
    uv_run(&loop_, UV_RUN_NOWAIT);
    return absl::OkStatus();
  }

  absl::Status Run() override {
    uv_run(&loop_, UV_RUN_DEFAULT);
    if (poll_error_ != 0) {
      return absl::InternalError(
          absl::StrCat("uv_poll callback: ", uv_strerror(poll_error_)));
    }
    if (!chain_->done()) return absl::InternalError("uv_run() returned early");
    return absl::OkStatus();
  }

 private:
  // `poll` first, so the uv_poll_t* libuv hands back is the Handle*.
  struct Handle {
    uv_poll_t poll;
    LibuvRunner* runner;
    int index;
  };

  static void OnPoll(uv_poll_t* poll, int status, int) {
    Handle* h = reinterpret_cast<Handle*>(poll);
    LibuvRunner* self = h->runner;
    if (status < 0) {
      self->poll_error_ = status;
      uv_stop(&self->loop_);
      return;
    }
    if (self->chain_->OnReadable(h->index)) uv_stop(&self->loop_);
  }

  uv_loop_t loop_;
  bool loop_ready_ = false;
  Chain* chain_ = nullptr;
  std::unique_ptr<Handle[]> handles_;
  int armed_ = 0;
  int poll_error_ = 0;
};

}  // namespace

std::unique_ptr<Runner> NewLibuvRunner() {
  return std::make_unique<LibuvRunner>();
}

}  // namespace fanin::bench
