#include "tests/testing/group_check.h"

#include <map>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "fanin/v1/fanin.grpc.pb.h"
#include "gtest/gtest.h"

namespace fanin::testing {

using fanin::v1::Assigned;
using fanin::v1::Event;

SubscribeRequest GroupRequest(const std::string& group, bool lossless) {
  SubscribeRequest request;
  request.set_group(group);
  request.set_delivery(lossless ? fanin::v1::DELIVERY_LOSSLESS
                                : fanin::v1::DELIVERY_LOSSY);
  return request;
}

fanin::v1::GroupInfo GroupInfoOf(const std::string& address,
                                 const std::string& name) {
  auto stub = NewStub(address);
  auto context = NewContext();
  fanin::v1::ListGroupsRequest request;
  request.set_group(name);
  fanin::v1::ListGroupsResponse response;
  grpc::Status status = stub->ListGroups(context.get(), request, &response);
  if (!status.ok() || response.groups_size() != 1) return {};
  return response.groups(0);
}

std::vector<Subscriber::State> Snapshots(
    const std::vector<std::unique_ptr<Subscriber>>& members) {
  std::vector<Subscriber::State> out;
  for (const auto& m : members) out.push_back(m->Snapshot());
  return out;
}

size_t CountOpened(const std::vector<std::unique_ptr<Subscriber>>& members) {
  size_t opened = 0;
  for (const auto& s : Snapshots(members)) opened += s.opened.size();
  return opened;
}

size_t CountClosed(const std::vector<std::unique_ptr<Subscriber>>& members) {
  absl::flat_hash_set<uint64_t> closed;
  for (const auto& m : members) {
    m->WaitUntil(
        [&](const Subscriber::State& s) {
          for (const auto& [id, index] : s.closed) closed.insert(id);
          return true;
        },
        absl::InfinitePast());
  }
  return closed.size();
}

Analysis Analyze(const std::vector<Subscriber::State>& states) {
  Analysis a;
  for (size_t k = 0; k < states.size(); ++k) {
    const Subscriber::State& s = states[k];
    absl::flat_hash_set<uint64_t> announced;
    absl::flat_hash_map<uint64_t, uint64_t> redelivered, from, last, revoked;
    size_t next = 0;
    auto take = [&](size_t until) {
      for (; next < until && next < s.events.size(); ++next) {
        const Event& e = s.events[next];
        const uint64_t id = e.connection_id();
        if (!announced.contains(id) && !e.has_opened()) {
          a.errors.push_back(absl::StrCat("member ", k, ": seq ", e.seq(),
                                          " of connection ", id,
                                          " without an Assigned first"));
        }
        announced.insert(id);
        if (last[id] >= e.seq()) {
          a.errors.push_back(absl::StrCat("member ", k, ": connection ", id,
                                          " seq ", e.seq(), " after ",
                                          last[id]));
        }
        last[id] = e.seq();
        if (from.contains(id) && e.seq() < from[id]) {
          a.errors.push_back(absl::StrCat("member ", k, ": connection ", id,
                                          " seq ", e.seq(), " before from_seq ",
                                          from[id]));
        }
        if (revoked.contains(id) && e.seq() >= revoked[id]) {
          a.errors.push_back(absl::StrCat("member ", k, ": connection ", id,
                                          " seq ", e.seq(), " after revoked"));
        }
        a.receipts[id].push_back({k, e, e.seq() <= redelivered[id]});
        a.members[id].insert(k);
      }
    };
    for (size_t i = 0; i < s.messages.size(); ++i) {
      take(s.events_before[i]);
      if (!s.messages[i].has_assigned()) continue;
      const Assigned& as = s.messages[i].assigned();
      const uint64_t id = as.connection_id();
      if (as.revoked()) {
        revoked[id] = as.from_seq();
        continue;
      }
      revoked.erase(id);
      announced.insert(id);
      redelivered[id] = as.possibly_redelivered_through_seq();
      from[id] = as.from_seq();
      a.assigned[id].push_back(as);
    }
    take(s.events.size());
  }
  return a;
}

std::string Story(const Analysis& a, uint64_t id) {
  std::string out;
  if (auto it = a.assigned.find(id); it != a.assigned.end()) {
    for (const Assigned& as : it->second) {
      absl::StrAppend(
          &out, "[assigned member=", as.member_id(), " from=", as.from_seq(),
          " redelivered<=", as.possibly_redelivered_through_seq(),
          " reason=", as.reason(), " prev=", as.previous_member(), "] ");
    }
  }
  if (auto it = a.receipts.find(id); it != a.receipts.end()) {
    size_t member = SIZE_MAX;
    for (const Receipt& r : it->second) {
      if (r.member != member) {
        member = r.member;
        absl::StrAppend(&out, "\n  member#", member, ":");
      }
      absl::StrAppend(&out, " ", r.event.seq(), r.marked ? "*" : "");
    }
  }
  return out;
}

std::vector<Event> UniqueEvents(const Analysis& a, uint64_t id) {
  std::map<uint64_t, Event> by_seq;
  std::map<uint64_t, int> unmarked;
  auto it = a.receipts.find(id);
  if (it == a.receipts.end()) return {};
  for (const Receipt& r : it->second) {
    by_seq.emplace(r.event.seq(), r.event);
    if (!r.marked) ++unmarked[r.event.seq()];
  }
  for (const auto& [seq, n] : unmarked) {
    EXPECT_LE(n, 1) << "connection " << id << " seq " << seq << " delivered to "
                    << n << " members unmarked; " << Story(a, id);
  }
  std::vector<Event> out;
  for (auto& [seq, e] : by_seq) out.push_back(std::move(e));
  return out;
}

void ExpectWholeLife(const Analysis& a, uint64_t id, const std::string& sent) {
  std::vector<Event> events = UniqueEvents(a, id);
  ASSERT_GE(events.size(), 3u) << "connection " << id;
  EXPECT_TRUE(events.front().has_opened()) << "connection " << id;
  EXPECT_TRUE(events.back().has_closed()) << "connection " << id;
  std::string got;
  for (const Event& e : events) got += e.data().payload();
  EXPECT_EQ(got.size(), sent.size())
      << "connection " << id << ": " << Story(a, id);
  EXPECT_TRUE(got == sent) << "connection " << id << ": bytes differ";
}

void ExpectNoErrors(const Analysis& a) {
  for (size_t i = 0; i < a.errors.size() && i < 10; ++i) {
    ADD_FAILURE() << a.errors[i];
  }
}

}  // namespace fanin::testing
