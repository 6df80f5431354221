#include "tests/core/core_harness.h"

#include <sys/socket.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "server/fanout/event_codec.h"

namespace fanin::coretest {

CoreHarness::CoreHarness(reactor::PollerKind kind, HarnessOptions options)
    : options_(std::move(options)),
      hub_(options_.hub),
      slots_(options_.max_connections, options_.max_connections_per_ip) {
  fanout::EventHub::Started started;
  auto sub =
      hub_.Subscribe({.lossless = options_.lossless, .wake = [] {}}, &started);
  EXPECT_TRUE(sub.ok()) << sub.status();
  if (sub.ok()) sub_ = *std::move(sub);
  auto loop = reactor::EventLoop::Create(kind);
  EXPECT_TRUE(loop.ok()) << loop.status();
  loop_ = *std::move(loop);
  listener_.name = "default";
  listener_.index = 0;
  listener_.pull = options_.pull;
  listener_.loop = loop_.get();
  shard_ = std::make_unique<core::Shard>(&options_.core, &hub_, loop_.get(),
                                         &slots_, &setup_counters_);
  loop_thread_ = std::make_unique<testing::LoopThread>(loop_.get());
}

CoreHarness::~CoreHarness() {
  loop_thread_.reset();  // The loop stops; the shard's leftovers go quietly.
  shard_.reset();
  if (sub_ != nullptr) hub_.Unsubscribe(sub_.get());
}

uint64_t CoreHarness::Adopt(int fd, const std::string& peer_host) {
  const uint64_t id = next_id_++;
  bool started = false;
  RunSync([&] {
    if (slots_.TryAcquire(peer_host) != core::ConnectionSlots::Refusal::kNone) {
      ADD_FAILURE() << "no connection slot for " << peer_host;
      return;
    }
    core::Connection* c = shard_->Insert(std::make_unique<core::Connection>(
        shard_.get(), &listener_, id, fd, absl::StrCat("peer-", id),
        "local-end", peer_host));
    absl::Status status = c->Start();
    EXPECT_TRUE(status.ok()) << status;
    if (!status.ok()) {
      shard_->Erase(id);
      return;
    }
    started = true;
  });
  return started ? id : 0;
}

void CoreHarness::WithConnection(uint64_t id,
                                 std::function<void(core::Connection&)> fn) {
  RunSync([&] {
    core::Connection* c = shard_->Find(id);
    if (c == nullptr) {
      ADD_FAILURE() << "no connection " << id;
      return;
    }
    fn(*c);
  });
}

size_t CoreHarness::ConnectionCount() {
  size_t count = 0;
  RunSync([&] { count = shard_->connection_count(); });
  return count;
}

fanin::v1::Connection CoreHarness::Info(uint64_t id) {
  fanin::v1::Connection info;
  WithConnection(id, [&](core::Connection& c) { c.FillInfo(&info); });
  return info;
}

void CoreHarness::Drain() {
  fanout::EventHub::ReadResult r;
  do {
    r.Clear();
    hub_.Read(sub_.get(), 1024, size_t{16} << 20, /*park_if_empty=*/false, &r);
    EXPECT_FALSE(r.gap.has_value()) << "the test's subscription lost events";
    events_.insert(events_.end(), r.events.begin(), r.events.end());
  } while (r.gap.has_value() || !r.events.empty());
}

bool CoreHarness::WaitUntil(const std::function<bool()>& pred,
                            absl::Duration timeout) {
  return testing::WaitFor(
      [&] {
        Drain();
        return pred();
      },
      timeout);
}

namespace {

// A stored event's body is protobuf's serialization of the event without seq.
bool Decode(const fanout::StoredEvent& stored, fanin::v1::Event* out) {
  if (!out->ParseFromString(stored.body)) return false;
  out->set_seq(stored.seq);
  return true;
}

}  // namespace

std::optional<fanin::v1::Event> CoreHarness::WaitEvent(
    uint64_t id, fanin::v1::EventKind kind, absl::Duration timeout) {
  std::optional<fanin::v1::Event> found;
  WaitUntil(
      [&] {
        for (const fanout::EventPtr& p : events_) {
          if (p->connection_id != id || p->kind != kind) continue;
          found.emplace();
          EXPECT_TRUE(Decode(*p, &*found));
          return true;
        }
        return false;
      },
      timeout);
  return found;
}

std::vector<fanin::v1::Event> CoreHarness::Events(uint64_t id) const {
  std::vector<fanin::v1::Event> out;
  for (const fanout::EventPtr& p : events_) {
    if (p->connection_id != id) continue;
    out.emplace_back();
    EXPECT_TRUE(Decode(*p, &out.back()));
  }
  return out;
}

std::vector<fanin::v1::EventKind> CoreHarness::Kinds(uint64_t id) const {
  std::vector<fanin::v1::EventKind> out;
  for (const fanout::EventPtr& p : events_) {
    if (p->connection_id == id) out.push_back(p->kind);
  }
  return out;
}

std::string CoreHarness::Payload(uint64_t id) const {
  std::string out;
  for (const fanout::EventPtr& p : events_) {
    if (p->connection_id == id && p->kind == fanin::v1::EVENT_KIND_DATA) {
      absl::StrAppend(&out, p->payload());
    }
  }
  return out;
}

std::vector<size_t> CoreHarness::DataSizes(uint64_t id) const {
  std::vector<size_t> out;
  for (const fanout::EventPtr& p : events_) {
    if (p->connection_id == id && p->kind == fanin::v1::EVENT_KIND_DATA) {
      out.push_back(p->data_size);
    }
  }
  return out;
}

size_t CoreHarness::Count(uint64_t id, fanin::v1::EventKind kind) const {
  size_t n = 0;
  for (const fanout::EventPtr& p : events_) {
    if (p->connection_id == id && p->kind == kind) ++n;
  }
  return n;
}

std::string Pattern(size_t n) {
  static constexpr char kDigits[] = "0123456789abcdefghijklmnopqrstuvwxyz";
  std::string out(n, '\0');
  for (size_t i = 0; i < n; ++i) {
    // Position-dependent, so a dropped or repeated chunk changes the text.
    out[i] = kDigits[(i + i / 997) % (sizeof(kDigits) - 1)];
  }
  return out;
}

void ShrinkBuffers(int fd) {
  const int small = 4096;
  EXPECT_EQ(setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
}

::testing::AssertionResult SameBytes(const std::string& got,
                                     const std::string& want) {
  if (got == want) return ::testing::AssertionSuccess();
  size_t i = 0;
  while (i < got.size() && i < want.size() && got[i] == want[i]) ++i;
  return ::testing::AssertionFailure()
         << "got " << got.size() << " bytes, want " << want.size()
         << "; first difference at byte " << i;
}

bool PeerSeesEof(int fd) {
  bool eof = false;
  return testing::WaitFor([&] {
    testing::ReadAvailable(fd, &eof);
    return eof;
  });
}

std::string ReadBytes(int fd, size_t n) {
  std::string got;
  testing::WaitFor([&] {
    got += testing::ReadAvailable(fd);
    return got.size() >= n;
  });
  return got;
}

}  // namespace fanin::coretest
