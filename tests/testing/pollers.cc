#include "tests/testing/pollers.h"

namespace fanin::testing {

const std::vector<reactor::PollerKind>& AllPollerKinds() {
  static const auto* kinds = new std::vector<reactor::PollerKind>{
      reactor::PollerKind::kEpollLevel, reactor::PollerKind::kEpollEdge,
      reactor::PollerKind::kPoll, reactor::PollerKind::kSelect};
  return *kinds;
}

std::string PollerTestName(
    const ::testing::TestParamInfo<reactor::PollerKind>& info) {
  switch (info.param) {
    case reactor::PollerKind::kEpollLevel:
      return "EpollLevel";
    case reactor::PollerKind::kEpollEdge:
      return "EpollEdge";
    case reactor::PollerKind::kPoll:
      return "Poll";
    case reactor::PollerKind::kSelect:
      return "Select";
  }
  return "Unknown";
}

}  // namespace fanin::testing
