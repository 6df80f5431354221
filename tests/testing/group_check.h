// Checks of worker-pool group members' streams, shared by the standalone
// (tests/server/group_test) and cluster (tests/cluster/groups_test) tests:
// walk every member's stream per connection and hold it to the rules a
// member stream keeps (Assigned first, increasing seqs, from_seq, revoked),
// then check a connection's life reached the group whole and once.
#ifndef FANIN_TESTS_TESTING_GROUP_CHECK_H_
#define FANIN_TESTS_TESTING_GROUP_CHECK_H_

#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "fanin/v1/fanin.pb.h"
#include "tests/testing/grpc_util.h"

namespace fanin::testing {

using fanin::v1::SubscribeRequest;

// A Subscribe request joining `group`.
SubscribeRequest GroupRequest(const std::string& group, bool lossless = true);

// ListGroups for one group; an empty GroupInfo when it fails.
fanin::v1::GroupInfo GroupInfoOf(const std::string& address,
                                 const std::string& name);

std::vector<Subscriber::State> Snapshots(
    const std::vector<std::unique_ptr<Subscriber>>& members);

// Opened events the members saw, together (each connection's goes to one).
size_t CountOpened(const std::vector<std::unique_ptr<Subscriber>>& members);

// Connections whose Closed reached some member.
size_t CountClosed(const std::vector<std::unique_ptr<Subscriber>>& members);

// One member's receipt of one event.
struct Receipt {
  size_t member;
  fanin::v1::Event event;
  bool marked;  // covered by an Assigned's possibly_redelivered_through_seq
};

// Every member's stream, walked in order, per connection; with the rules
// every member stream must keep checked on the way:
//   - a connection's first event on a member is its Opened or follows an
//     Assigned for it;
//   - a connection's events keep strictly increasing seqs on a member, none
//     before the Assigned's from_seq, none after a revoking Assigned.
struct Analysis {
  absl::flat_hash_map<uint64_t, std::vector<Receipt>> receipts;
  absl::flat_hash_map<uint64_t, std::vector<fanin::v1::Assigned>> assigned;
  absl::flat_hash_map<uint64_t, std::set<size_t>> members;
  std::vector<std::string> errors;
};
Analysis Analyze(const std::vector<Subscriber::State>& states);

// The events of a connection, each seq once, in seq order; fails the test
// when a seq reached members more than once without being marked.
std::vector<fanin::v1::Event> UniqueEvents(const Analysis& a, uint64_t id);

// Lossless: the connection's whole life reached the group, byte-exact.
void ExpectWholeLife(const Analysis& a, uint64_t id, const std::string& sent);

void ExpectNoErrors(const Analysis& a);

// What happened to a connection, for failure messages: its Assigned
// messages and which member got which seqs (* marked).
std::string Story(const Analysis& a, uint64_t id);

}  // namespace fanin::testing

#endif  // FANIN_TESTS_TESTING_GROUP_CHECK_H_
