// The poller kinds as test parameters, with one naming for every suite that
// repeats its cases over them (reactor, net, core, server).
//
// Example:
//   INSTANTIATE_TEST_SUITE_P(AllPollers, MyTest,
//                            ::testing::ValuesIn(AllPollerKinds()),
//                            PollerTestName);
#ifndef FANIN_TESTS_TESTING_POLLERS_H_
#define FANIN_TESTS_TESTING_POLLERS_H_

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "server/reactor/poller.h"

namespace fanin::testing {

// Every backend: epoll level, epoll edge, poll, select.
const std::vector<reactor::PollerKind>& AllPollerKinds();

// "EpollLevel", "EpollEdge", "Poll", "Select".
std::string PollerTestName(
    const ::testing::TestParamInfo<reactor::PollerKind>& info);

}  // namespace fanin::testing

#endif  // FANIN_TESTS_TESTING_POLLERS_H_
