#include <dlfcn.h>
#include <event2/event.h>

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "tests/bench/reactor/runners.h"

namespace fanin::bench {
namespace {

class LibeventRunner final : public Runner {
 public:
  explicit LibeventRunner(std::string method) : method_(std::move(method)) {}

  ~LibeventRunner() override {
    // event_free() also event_del()s.
    for (event* ev : events_) event_free(ev);
    if (base_ != nullptr) event_base_free(base_);
  }

  absl::Status Init() override {
    if (absl::Status s = CheckSymbolsAreLibevents(); !s.ok()) return s;
    event_config* cfg = event_config_new();
    if (cfg == nullptr) {
      return absl::ResourceExhaustedError("event_config_new()");
    }
    // Avoiding every other compiled-in method leaves `method_` as the only
    // choice.
    for (const char** m = event_get_supported_methods();
         m != nullptr && *m != nullptr; ++m) {
      if (method_ != *m) event_config_avoid_method(cfg, *m);
    }
    event_config_set_flag(cfg, EVENT_BASE_FLAG_IGNORE_ENV);
    base_ = event_base_new_with_config(cfg);
    event_config_free(cfg);
    if (base_ == nullptr) {
      return absl::UnavailableError(
          absl::StrCat("libevent has no usable '", method_, "'"));
    }
    if (method_ != event_base_get_method(base_)) {
      return absl::UnavailableError(
          absl::StrCat("libevent picked '", event_base_get_method(base_),
                       "' instead of '", method_, "'"));
    }
    return absl::OkStatus();
  }

  absl::Status Arm(Chain* chain) override {
    chain_ = chain;
    slots_.resize(chain->size());
    events_.reserve(chain->size());
    for (int i = 0; i < chain->size(); ++i) {
      slots_[i] = Slot{this, i};
      event* ev = event_new(base_, chain->read_fd(i), EV_READ | EV_PERSIST,
                            &OnRead, &slots_[i]);
      if (ev == nullptr) return absl::ResourceExhaustedError("event_new()");
      events_.push_back(ev);
      if (event_add(ev, nullptr) != 0) {
        return absl::InternalError(
            absl::StrCat("event_add() fd ", chain->read_fd(i)));
      }
    }
    return absl::OkStatus();
  }

  absl::Status Run() override {
    if (event_base_loop(base_, 0) < 0) {
      return absl::InternalError("event_base_loop()");
    }
    if (!chain_->done()) {
      return absl::InternalError("event_base_loop() returned early");
    }
    return absl::OkStatus();
  }

 private:
  // libev exports a libevent emulation under the same names; if it came first
  // in the symbol scope, these calls would land in libev (and crash). Fail
  // loudly instead.
  static absl::Status CheckSymbolsAreLibevents() {
    const void* fns[] = {reinterpret_cast<const void*>(&event_add),
                         reinterpret_cast<const void*>(&event_del),
                         reinterpret_cast<const void*>(&event_base_loop),
                         reinterpret_cast<const void*>(&event_base_free),
                         reinterpret_cast<const void*>(&event_base_get_method)};
    for (const void* fn : fns) {
      Dl_info info = {};
      if (::dladdr(fn, &info) == 0 || info.dli_fname == nullptr ||
          absl::string_view(info.dli_fname).find("libevent") ==
              absl::string_view::npos) {
        return absl::FailedPreconditionError(absl::StrCat(
            "libevent symbol ",
            info.dli_sname != nullptr ? info.dli_sname : "?", " resolves to ",
            info.dli_fname != nullptr ? info.dli_fname : "?",
            ": link libevent_core before libev"));
      }
    }
    return absl::OkStatus();
  }

  struct Slot {
    LibeventRunner* runner;
    int index;
  };

  static void OnRead(evutil_socket_t, short, void* arg) {
    Slot* slot = static_cast<Slot*>(arg);
    if (slot->runner->chain_->OnReadable(slot->index)) {
      event_base_loopbreak(slot->runner->base_);
    }
  }

  const std::string method_;
  event_base* base_ = nullptr;
  Chain* chain_ = nullptr;
  std::vector<Slot> slots_;
  std::vector<event*> events_;
};

}  // namespace

std::unique_ptr<Runner> NewLibeventRunner(std::string method) {
  return std::make_unique<LibeventRunner>(std::move(method));
}

}  // namespace fanin::bench
