// fanin watch: one blocking Subscribe stream (reconnected with back-off under
// --follow), printed as text, JSON lines or raw payload bytes.
#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "client/command.h"
#include "client/exit_codes.h"
#include "client/format.h"
#include "fanin/v1/fanin.grpc.pb.h"

namespace fanin::cli {
namespace {

constexpr absl::Duration kInitialBackoff = absl::Milliseconds(100);
constexpr absl::Duration kMaxBackoff = absl::Seconds(5);
// How often a wait for the channel checks for Ctrl-C.
constexpr absl::Duration kSignalCheck = absl::Milliseconds(100);

// What ends a watch from outside the reading thread: a signal (from
// SignalWatcher's thread). Cancels the call in flight and wakes the back-off
// wait.
class StopControl {
 public:
  // The call to cancel on Stop; nullptr between calls. Cancels at once when
  // a stop already happened.
  void SetContext(grpc::ClientContext* context) {
    absl::MutexLock lock(&mu_);
    context_ = context;
    if (context_ != nullptr && signal_ != 0) context_->TryCancel();
  }

  void Stop(int sig) {
    absl::MutexLock lock(&mu_);
    if (signal_ == 0) signal_ = sig;
    if (context_ != nullptr) context_->TryCancel();
  }

  // The signal that stopped the watch, 0 while none has.
  int signal() {
    absl::MutexLock lock(&mu_);
    return signal_;
  }

  // Waits for d or until stopped; returns whether stopped.
  bool SleepFor(absl::Duration d) {
    absl::MutexLock lock(&mu_);
    auto stopped = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return signal_ != 0;
    };
    mu_.AwaitWithTimeout(absl::Condition(&stopped), d);
    return signal_ != 0;
  }

 private:
  absl::Mutex mu_;
  grpc::ClientContext* context_ ABSL_GUARDED_BY(mu_) = nullptr;
  int signal_ ABSL_GUARDED_BY(mu_) = 0;
};

// Turns SIGINT/SIGTERM into StopControl::Stop on a thread of its own, so
// that the gRPC calls, which are not async-signal-safe, never run in a
// signal handler. Construct before any gRPC thread exists: the threads
// inherit the blocked mask and the signals reach only sigwait here.
class SignalWatcher {
 public:
  explicit SignalWatcher(StopControl* control) {
    sigemptyset(&set_);
    sigaddset(&set_, SIGINT);
    sigaddset(&set_, SIGTERM);
    sigaddset(&set_, SIGUSR1);  // our own wake-up at exit
    pthread_sigmask(SIG_BLOCK, &set_, nullptr);
    thread_ = std::thread([this, control] {
      while (true) {
        int sig = 0;
        if (sigwait(&set_, &sig) != 0) continue;
        if (sig == SIGUSR1) {
          if (done_.load()) return;
          continue;
        }
        control->Stop(sig);
      }
    });
  }

  ~SignalWatcher() {
    done_.store(true);
    pthread_kill(thread_.native_handle(), SIGUSR1);
    thread_.join();
  }

 private:
  sigset_t set_;
  std::atomic<bool> done_{false};
  std::thread thread_;
};

using Mode = OutputFormat;

struct WatchOptions {
  Mode mode = Mode::kText;
  // Filters, delivery and where the first stream starts (resume, start_back
  // or start_time_unix_nano); each call sets its own start.
  v1::SubscribeRequest request;
  bool follow = false;
  uint64_t count = 0;  // 0: no limit
  absl::Time end = absl::InfiniteFuture();
  TextOptions text;
  bool quiet = false;
};

// Builds the options from flags; prints a usage error and returns nullopt on
// a bad value.
std::optional<WatchOptions> ParseWatchOptions(const Invocation& inv) {
  const ParsedFlags& f = inv.flags;
  auto usage = [](absl::string_view message) {
    PrintError(absl::StrCat("watch: ", message, " (see fanin watch --help)"));
    return std::nullopt;
  };
  if (!f.positional().empty()) {
    return usage(absl::StrCat("unexpected argument \"", f.positional()[0],
                              "\"; filters are flags"));
  }
  WatchOptions o;
  o.mode = f.Get<OutputFormat>("output", OutputFormat::kText);
  for (const std::string& kind : f.List("kind")) {
    absl::StatusOr<v1::EventKind> parsed = ParseKind(kind);
    if (!parsed.ok()) return usage(parsed.status().message());
    o.request.add_kinds(*parsed);
  }
  for (const std::string& listener : f.List("listener")) {
    o.request.add_listeners(listener);
  }
  for (const std::string& node : f.List("node")) o.request.add_nodes(node);
  for (const std::string& id : f.List("connection")) {
    uint64_t n;
    if (id.empty() || !absl::ascii_isdigit(id[0]) ||
        !absl::SimpleAtoi(id, &n) || n == 0) {
      return usage(absl::StrCat("--connection wants positive integers, got \"",
                                id, "\""));
    }
    o.request.add_connection_ids(n);
  }
  o.request.set_omit_payload(f.Bool("omit_payload"));
  if (o.mode == Mode::kRaw && o.request.omit_payload()) {
    return usage(
        "-o raw prints payloads; it cannot be combined with "
        "--omit-payload");
  }
  uint64_t max_payload = f.Uint("max_payload", 0);
  if (max_payload > UINT32_MAX) return usage("--max-payload is too large");
  o.request.set_max_payload_bytes(static_cast<uint32_t>(max_payload));
  uint64_t max_batch = f.Uint("max_batch", 0);
  if (max_batch > UINT32_MAX) return usage("--max-batch is too large");
  o.request.set_max_batch_events(static_cast<uint32_t>(max_batch));
  o.request.set_delivery(f.Bool("lossless") ? v1::DELIVERY_LOSSLESS
                                            : v1::DELIVERY_LOSSY);
  o.request.set_resume_after_seq(f.Uint("resume_after", 0));
  o.request.set_resume_epoch(f.String("resume_epoch", ""));
  // One start at most: --last and --since pick where a new stream starts,
  // resuming continues after a seq already seen.
  const bool resume = f.Has("resume_after") || f.Has("resume_epoch");
  if (f.Has("last") && f.Has("since")) {
    return usage(
        "--last and --since are exclusive: start N events back or at a "
        "time, not both");
  }
  if ((f.Has("last") || f.Has("since")) && resume) {
    return usage(absl::StrCat(
        f.Has("last") ? "--last" : "--since",
        " cannot be combined with --resume-after or --resume-epoch: resuming "
        "continues after a seq already seen, ",
        f.Has("last") ? "--last" : "--since",
        " picks where a new stream starts"));
  }
  if (f.Has("last")) {
    const uint64_t last = f.Uint("last", 0);
    if (last == 0) return usage("--last wants a positive number of events");
    o.request.set_start_back(last);
  }
  if (f.Has("since")) {
    const absl::Duration since = f.Duration("since", absl::ZeroDuration());
    if (since <= absl::ZeroDuration()) {
      return usage("--since wants a positive duration such as 30s or 5m");
    }
    // The client's clock against the server's event times.
    o.request.set_start_time_unix_nano(
        static_cast<uint64_t>(absl::ToUnixNanos(absl::Now() - since)));
  }
  o.request.set_group(f.String("group", ""));
  o.request.set_rebalance(f.Bool("rebalance"));
  if (o.request.rebalance() && o.request.group().empty()) {
    return usage("--rebalance needs --group");
  }
  o.follow = f.Bool("follow");
  o.count = f.Uint("count", 0);
  absl::Duration timeout = f.Duration("timeout", absl::ZeroDuration());
  if (timeout > absl::ZeroDuration()) o.end = absl::Now() + timeout;
  o.text.preview_bytes = static_cast<size_t>(f.Uint("preview", 64));
  o.quiet = f.Bool("quiet");
  return o;
}

// Errors that another attempt cannot fix.
bool Retryable(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::OUT_OF_RANGE:
    case grpc::StatusCode::UNAUTHENTICATED:
    case grpc::StatusCode::PERMISSION_DENIED:
    case grpc::StatusCode::UNIMPLEMENTED:
    case grpc::StatusCode::FAILED_PRECONDITION:
      return false;
    default:
      return true;
  }
}

// Reads one stream at a time from one of the servers, in list order: on a
// failure it moves on to the next server (the same one when there is only
// one), resuming after the last event printed with its epoch. Nodes of a
// cluster share one epoch, so a resume there continues exactly; standalone
// servers each have their own, which the new server answers with a
// Gap(EPOCH_CHANGED).
class Watcher {
 public:
  Watcher(WatchOptions options, std::vector<ServerConnection> connections)
      : o_(std::move(options)),
        connections_(std::move(connections)),
        out_(stdout) {
    for (const ServerConnection& c : connections_) {
      stubs_.push_back(v1::FanIn::NewStub(c.channel()));
    }
    resume_seq_ = o_.request.resume_after_seq();
    resume_epoch_ = o_.request.resume_epoch();
    starting_ =
        o_.request.start_back() != 0 || o_.request.start_time_unix_nano() != 0;
  }

  int Run(StopControl* control) {
    absl::Duration backoff = kInitialBackoff;
    bool failing = false;  // the previous attempt failed
    // Attempts that failed before their stream started, since one did.
    size_t failed_attempts = 0;
    while (true) {
      if (control->signal() != 0) return 128 + control->signal();
      if (absl::Now() >= o_.end) return Finish(kExitOk);

      grpc::ClientContext context;
      connection().Prepare(&context, absl::ZeroDuration());
      if (o_.end != absl::InfiniteFuture()) {
        context.set_deadline(absl::ToChronoTime(o_.end));
      }
      v1::SubscribeRequest request = o_.request;
      if (!starting_) {
        request.clear_start_back();
        request.clear_start_time_unix_nano();
      }
      // A group keeps its own place: a member that comes back gets what the
      // group holds for it, not a replay by seq.
      if (!starting_ && o_.request.group().empty()) {
        request.set_resume_after_seq(resume_seq_);
        request.set_resume_epoch(resume_epoch_);
      }
      control->SetContext(&context);
      bool started = false;
      bool done = false;  // --count reached or output gone
      {
        std::unique_ptr<grpc::ClientReader<v1::SubscribeResponse>> reader =
            stubs_[current_]->Subscribe(&context, request);
        v1::SubscribeResponse response;
        while (!done && reader->Read(&response)) {
          if (response.has_started()) {
            started = true;
            OnStarted(response.started(), failing);
            failing = false;
          } else {
            done = OnMessage(response);
          }
          if (!out_.Flush()) done = true;
        }
        // Finish blocks until the server ends the call; end it ourselves.
        if (done) context.TryCancel();
        status_ = reader->Finish();
      }
      control->SetContext(nullptr);

      if (out_.failed()) return OutputFailureExit(out_);
      if (done) return Finish(kExitOk);
      if (control->signal() != 0) {
        out_.Flush();
        return 128 + control->signal();
      }
      if (absl::Now() >= o_.end ||
          (status_.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED &&
           o_.end != absl::InfiniteFuture())) {
        return Finish(kExitOk);
      }
      // Without --follow, a list of servers is still tried in turn until
      // one is reachable.
      const bool next_server =
          !started && status_.error_code() == grpc::StatusCode::UNAVAILABLE &&
          failed_attempts + 1 < connections_.size();
      if (o_.follow ? !Retryable(status_.error_code()) : !next_server) {
        if (status_.ok()) {
          Notice(
              "the server ended the stream (shutting down?); use --follow "
              "to reconnect and resume");
          return Finish(kExitOk);
        }
        out_.Flush();
        if (started && status_.error_code() == grpc::StatusCode::UNAVAILABLE) {
          PrintError(absl::StrCat(
              "lost the stream from ", connection().server(), ": ",
              status_.error_message(),
              " \xe2\x80\x94 use --follow to reconnect and resume"));
        } else {
          PrintError(RpcErrorMessage(status_, connection().server(), "watch"));
        }
        return ExitCodeForStatus(status_.error_code());
      }

      // The back-off doubles once every server has failed in a row.
      if (started) {
        failed_attempts = 0;
        backoff = kInitialBackoff;
      } else if (++failed_attempts % connections_.size() == 0) {
        backoff = std::min(backoff * 2, kMaxBackoff);
      }
      const std::string from = connection().server();
      current_ = (current_ + 1) % connections_.size();
      if (!failing) {
        const std::string why =
            status_.ok() ? "closed by the server"
                         : absl::StrCat(StatusCodeName(status_.error_code()),
                                        ": ", status_.error_message());
        if (connections_.size() == 1) {
          Notice(absl::StrCat(started ? "stream ended" : "cannot subscribe",
                              " (", why, "); reconnecting to ", from,
                              " with back-off, ", ResumeText()));
        } else {
          Notice(absl::StrCat(
              started ? "stream from " : "cannot subscribe at ", from,
              started ? " ended" : "", " (", why, "); trying ",
              connection().server(),
              o_.follow ? " (the servers in turn, with back-off)" : "", ", ",
              ResumeText()));
        }
        failing = true;
      }
      if (WaitToRetry(std::min(backoff, o_.end - absl::Now()), control)) {
        return 128 + control->signal();
      }
    }
  }

 private:
  // Waits up to `wait` before the next attempt; returns true when a signal
  // stopped the watch. While the channel is down this ends as soon as it is
  // READY again, so a restarted server is picked up within gRPC's own
  // reconnect back-off rather than after our whole back-off.
  bool WaitToRetry(absl::Duration wait, StopControl* control) {
    const std::shared_ptr<grpc::Channel>& channel = connection().channel();
    if (channel->GetState(false) == GRPC_CHANNEL_READY) {
      // The call failed on a healthy channel (e.g. the server ended it):
      // a plain pause keeps this from spinning.
      return wait > absl::ZeroDuration() && control->SleepFor(wait);
    }
    absl::Time until = absl::Now() + wait;
    while (control->signal() == 0) {
      absl::Time now = absl::Now();
      if (now >= until) break;
      grpc_connectivity_state state = channel->GetState(true);
      if (state == GRPC_CHANNEL_READY) break;
      // Short steps: a Ctrl-C cannot interrupt WaitForStateChange.
      channel->WaitForStateChange(
          state, absl::ToChronoTime(std::min(until, now + kSignalCheck)));
    }
    return control->signal() != 0;
  }

  const ServerConnection& connection() const { return connections_[current_]; }

  // Where the next stream starts, for notices.
  std::string ResumeText() const {
    if (!starting_) return absl::StrCat("resuming after seq ", resume_seq_);
    if (o_.request.start_back() != 0) {
      return absl::StrCat("starting with the last ", o_.request.start_back(),
                          " events (nothing was printed yet)");
    }
    return absl::StrCat("starting at ",
                        FormatTimeOfDay(o_.request.start_time_unix_nano()),
                        " (nothing was printed yet)");
  }

  int Finish(int code) {
    if (!out_.Flush()) return OutputFailureExit(out_);
    return code;
  }

  // Informational line on stderr, after what stdout already holds.
  void Notice(absl::string_view text) {
    out_.Flush();
    PrintError(text);
  }

  void OnStarted(const v1::Started& started, bool reconnect) {
    if (o_.mode == Mode::kJson) out_.Line(MessageJson(started));
    const std::string& epoch = started.server_epoch();
    const std::string& server = connection().server();
    if (!last_epoch_.empty() && last_epoch_ != epoch) {
      std::string lost =
          starting_ ? absl::StrCat("; ", ResumeText())
                    : absl::StrCat("; events of the old epoch after seq ",
                                   resume_seq_,
                                   " that were not printed are lost; "
                                   "continuing from the new epoch's oldest "
                                   "retained event");
      if (server == last_server_) {
        Notice(absl::StrCat("the server restarted: new epoch ", epoch, " (was ",
                            last_epoch_, ")", lost));
      } else {
        Notice(absl::StrCat(server, " serves epoch ", epoch, ", not ",
                            last_epoch_, " of ", last_server_,
                            " (servers outside a cluster do not share a "
                            "stream)",
                            lost));
      }
    } else if (reconnect && last_server_.empty()) {
      Notice(absl::StrCat("subscribed to ", server, " (epoch ", epoch, ")"));
    } else if (reconnect) {
      Notice(absl::StrCat("reconnected to ", server, " (epoch ", epoch, "), ",
                          ResumeText()));
    }
    last_epoch_ = epoch;
    last_server_ = server;
    stream_epoch_ = epoch;
    if (resume_epoch_.empty() && !starting_) {
      // Started live: a later reconnect resumes from here.
      resume_epoch_ = epoch;
      if (resume_seq_ == 0) resume_seq_ = started.head_seq();
    }
  }

  // Returns true when the watch is done (--count reached).
  bool OnMessage(const v1::SubscribeResponse& response) {
    switch (response.message_case()) {
      case v1::SubscribeResponse::kBatch:
        for (const v1::Event& event : response.batch().events()) {
          if (o_.count > 0 && printed_ >= o_.count) return true;
          PrintEvent(event);
          ++printed_;
          starting_ = false;
          resume_epoch_ = stream_epoch_;
          resume_seq_ = event.seq();
        }
        return o_.count > 0 && printed_ >= o_.count;
      case v1::SubscribeResponse::kGap: {
        const v1::Gap& gap = response.gap();
        if (o_.mode == Mode::kJson) {
          out_.Line(MessageJson(gap));
        } else {
          Notice(FormatGapText(gap));
        }
        if (gap.reason() != v1::GAP_REASON_EPOCH_CHANGED) {
          // Lost for good; resuming must not ask for them again.
          starting_ = false;
          if (resume_epoch_ != stream_epoch_) resume_seq_ = 0;
          resume_epoch_ = stream_epoch_;
          resume_seq_ = std::max(resume_seq_, gap.last_seq());
        }
        return false;
      }
      case v1::SubscribeResponse::kAssigned:
        if (o_.mode == Mode::kJson) {
          out_.Line(MessageJson(response.assigned()));
        } else {
          Notice(FormatAssignedText(response.assigned()));
        }
        return false;
      case v1::SubscribeResponse::kHeartbeat:
        if (o_.mode == Mode::kJson) {
          out_.Line(MessageJson(response.heartbeat()));
        } else if (!o_.quiet) {
          Notice(FormatHeartbeatText(response.heartbeat()));
        }
        return false;
      default:
        return false;
    }
  }

  void PrintEvent(const v1::Event& event) {
    switch (o_.mode) {
      case Mode::kText:
        out_.Line(FormatEventText(event, o_.text));
        break;
      case Mode::kJson:
        out_.Line(MessageJson(event));
        break;
      case Mode::kRaw:
        if (event.has_data()) out_.Write(event.data().payload());
        break;
    }
  }

  WatchOptions o_;
  const std::vector<ServerConnection> connections_;
  std::vector<std::unique_ptr<v1::FanIn::Stub>> stubs_;
  size_t current_ = 0;  // the server of the stream being read
  Output out_;
  grpc::Status status_;
  uint64_t printed_ = 0;
  // Where a new stream resumes: after resume_seq_ of resume_epoch_. While
  // starting_, nothing was printed yet and a new stream asks for the
  // command's own start (--last, --since) instead.
  uint64_t resume_seq_ = 0;
  std::string resume_epoch_;
  bool starting_ = false;
  // The epoch of the stream being read, and of the last Started seen (with
  // the server that sent it).
  std::string stream_epoch_;
  std::string last_epoch_;
  std::string last_server_;
};

int RunWatch(const Invocation& inv) {
  std::optional<WatchOptions> options = ParseWatchOptions(inv);
  if (!options) return kExitUsage;
  StopControl control;
  // Before the channel exists, so that no gRPC thread can take the signals.
  SignalWatcher signals(&control);
  std::vector<ServerConnection> connections;
  for (const std::string& server : inv.server.servers) {
    ServerOptions one = inv.server;
    one.server = server;
    one.servers = {server};
    absl::StatusOr<ServerConnection> connection = ServerConnection::Open(one);
    if (!connection.ok()) {
      PrintError(connection.status().message());
      return kExitFailure;
    }
    connections.push_back(*std::move(connection));
  }
  Watcher watcher(*std::move(options), std::move(connections));
  return watcher.Run(&control);
}

}  // namespace

Command WatchCommand() {
  return {
      .name = "watch",
      .synopsis = "watch [flags]",
      .summary = "print events as they arrive (text, JSON lines or raw bytes)",
      .description =
          "Subscribes to the server's event stream and prints each event as "
          "it\n"
          "arrives. -o text (default) prints one aligned line per event:\n"
          "time (UTC), seq, connection (in a cluster with its [node]),\n"
          "listener, kind, and for data the size and an escaped preview.\n"
          "-o json prints each fanin.v1 message on a line of its own in\n"
          "protobuf's JSON mapping: Started, then Event, Gap and Heartbeat\n"
          "(field names as in fanin.proto, every field present, 64-bit\n"
          "numbers as strings, payload in base64).\n"
          "-o raw writes only payload bytes, for piping. Gaps and heartbeats\n"
          "go to stderr in text and raw mode.\n"
          "\n"
          "--last N starts with the last N retained events that match the\n"
          "filters, --since D with the first one at most D old (by this\n"
          "machine's clock); both then go on live, like hubble observe.\n"
          "\n"
          "--group NAME joins a worker pool: watches naming the same group\n"
          "share its connections, each connection's events going to one of\n"
          "them. Taking over a connection (its member left, a rebalance) is\n"
          "announced by an Assigned: on stderr in text and raw mode, as its\n"
          "own JSON object (the one with from_seq) in json mode.\n"
          "\n"
          "--follow reconnects with back-off (0.1s doubling to 5s) when the\n"
          "server restarts or the network fails, resuming after the last seq\n"
          "printed, and reports on stderr what was missed (a gap, or a new\n"
          "server epoch). With --server A,B,... it moves on to the next\n"
          "server each time a stream fails (the nodes of a cluster share one\n"
          "stream, so the resume is exact there). Ctrl-C ends the watch after\n"
          "flushing output (exit 130; SIGTERM 143); --count and --timeout end\n"
          "it with exit 0. A closed pipe (fanin watch | head) ends it "
          "quietly.\n",
      .examples =
          "  fanin watch\n"
          "  fanin watch --kind opened,closed --listener default\n"
          "  fanin watch --connection 42 -o raw > conn42.bin\n"
          "  fanin watch -o json --follow --lossless | jq -c "
          "'select(.data)'\n"
          "  fanin watch --resume-after 1200 --resume-epoch EPOCH --count 100\n"
          "  fanin watch --last 20 --kind data\n"
          "  fanin watch --since 5m -o json --follow --server a:50051,b:50051\n"
          "  fanin watch --timeout 30s --omit-payload\n"
          "  fanin watch --group workers --lossless -o json\n",
      .flags =
          {{.name = "output",
            .short_name = 'o',
            .type = FlagType::kString,
            .value_name = "FORMAT",
            .help = "output format",
            .choices = {"text", "json", "raw"}},
           {.name = "kind",
            .type = FlagType::kList,
            .value_name = "KINDS",
            .help = "only these kinds: opened,data,writable,read_closed,"
                    "closed,readable,node (repeatable)"},
           {.name = "listener",
            .type = FlagType::kList,
            .value_name = "NAMES",
            .help = "only connections of these listeners (repeatable)"},
           {.name = "connection",
            .type = FlagType::kList,
            .value_name = "IDS",
            .help = "only these connection ids (repeatable)"},
           {.name = "node",
            .type = FlagType::kList,
            .value_name = "NAMES",
            .help = "cluster: only connections of these nodes and their "
                    "node events (repeatable)"},
           {.name = "omit-payload",
            .type = FlagType::kBool,
            .help = "data events carry the size only"},
           {.name = "max-payload",
            .type = FlagType::kUint,
            .value_name = "BYTES",
            .help = "cut payloads to BYTES on the server (0: no cap)"},
           {.name = "lossless",
            .type = FlagType::kBool,
            .help = "never drop events; the server back-pressures the "
                    "sockets instead"},
           {.name = "resume-after",
            .type = FlagType::kUint,
            .value_name = "SEQ",
            .help = "replay retained events after SEQ, then continue live"},
           {.name = "resume-epoch",
            .type = FlagType::kString,
            .value_name = "EPOCH",
            .help = "the server epoch SEQ belongs to (from a started "
                    "object)"},
           {.name = "last",
            .type = FlagType::kUint,
            .value_name = "N",
            .help = "start with the last N retained events that match, then "
                    "live"},
           {.name = "since",
            .type = FlagType::kDuration,
            .value_name = "DURATION",
            .help = "start with the retained events of the last DURATION "
                    "(e.g. 30s, 5m), then live"},
           {.name = "follow",
            .short_name = 'f',
            .type = FlagType::kBool,
            .help = "reconnect and resume after restarts and network "
                    "faults, trying each --server in turn"},
           {.name = "count",
            .short_name = 'n',
            .type = FlagType::kUint,
            .value_name = "N",
            .help = "stop after N events"},
           {.name = "timeout",
            .type = FlagType::kDuration,
            .value_name = "DURATION",
            .help = "stop after DURATION (default: run until stopped)"},
           {.name = "preview",
            .type = FlagType::kUint,
            .value_name = "BYTES",
            .help = "payload bytes shown per text line (default 64)"},
           {.name = "max-batch",
            .type = FlagType::kUint,
            .value_name = "N",
            .help = "ask for at most N events per batch (0: server default)"},
           {.name = "quiet",
            .short_name = 'q',
            .type = FlagType::kBool,
            .help = "no heartbeat lines on stderr"},
           {.name = "group",
            .type = FlagType::kString,
            .value_name = "NAME",
            .help = "join worker-pool group NAME: share its connections "
                    "with the other watches of NAME"},
           {.name = "rebalance",
            .type = FlagType::kBool,
            .help = "with --group: also take over existing connections "
                    "until the group is balanced"}},
      .run = RunWatch,
  };
}

}  // namespace fanin::cli
