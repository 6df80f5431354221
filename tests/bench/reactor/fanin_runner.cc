#include "tests/bench/reactor/fanin_runner.h"

#include <memory>

#include "absl/strings/str_cat.h"
#include "server/reactor/event_loop.h"
#include "server/reactor/poller.h"

namespace fanin::bench {
namespace {

using ::fanin::reactor::EventLoop;
using ::fanin::reactor::IoHandler;
using ::fanin::reactor::kReadable;
using ::fanin::reactor::PollerKind;

// Drives the chain the way the server drives connections: one IoHandler per fd,
// watched on an EventLoop, Run() on the calling thread until a handler calls
// Stop().
class FaninRunner final : public Runner {
 public:
  explicit FaninRunner(PollerKind kind) : kind_(kind) {}

  ~FaninRunner() override {
    if (loop_ == nullptr) return;
    for (int i = 0; i < armed_; ++i) loop_->Unwatch(chain_->read_fd(i));
  }

  absl::Status Init() override {
    absl::StatusOr<std::unique_ptr<EventLoop>> loop = EventLoop::Create(kind_);
    if (!loop.ok()) return loop.status();
    loop_ = *std::move(loop);
    edge_ = loop_->edge_triggered();
    return absl::OkStatus();
  }

  absl::Status Arm(Chain* chain) override {
    chain_ = chain;
    handlers_ = std::make_unique<Handler[]>(chain->size());
    for (int i = 0; i < chain->size(); ++i) {
      handlers_[i].runner = this;
      handlers_[i].index = i;
      if (absl::Status s =
              loop_->Watch(chain->read_fd(i), kReadable, &handlers_[i]);
          !s.ok()) {
        return s;
      }
      ++armed_;
    }
    return absl::OkStatus();
  }

  absl::Status Run() override {
    loop_->Run();
    if (!chain_->done()) {
      return absl::InternalError("EventLoop::Run() returned early");
    }
    return absl::OkStatus();
  }

 private:
  class Handler final : public IoHandler {
   public:
    void OnIo(uint32_t events) override {
      if ((events & kReadable) == 0) return;
      Chain* chain = runner->chain_;
      bool done;
      if (runner->edge_) {
        bool more = false;
        done = chain->OnReadableEdge(index, &more);
        if (more) runner->loop_->Redispatch(chain->read_fd(index), kReadable);
      } else {
        done = chain->OnReadable(index);
      }
      if (done) runner->loop_->Stop();
    }

    FaninRunner* runner = nullptr;
    int index = 0;
  };

  const PollerKind kind_;
  std::unique_ptr<EventLoop> loop_;
  bool edge_ = false;
  Chain* chain_ = nullptr;
  std::unique_ptr<Handler[]> handlers_;
  int armed_ = 0;
};

}  // namespace

std::unique_ptr<Runner> NewFaninRunner(PollerKind kind) {
  return std::make_unique<FaninRunner>(kind);
}

}  // namespace fanin::bench
