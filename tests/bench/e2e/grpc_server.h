// Starting the benchmarks' own gRPC servers (the ceiling, the relay).
#ifndef FANIN_TESTS_BENCH_E2E_GRPC_SERVER_H_
#define FANIN_TESTS_BENCH_E2E_GRPC_SERVER_H_

#include <memory>
#include <string>

#include "grpcpp/grpcpp.h"

namespace fanin::bench {

// An insecure server of `service` on `address` (port 0: any), started; the
// port it got in *port. Exits the process with a message naming `who` when
// it cannot listen.
std::unique_ptr<grpc::Server> StartGrpcServer(grpc::Service* service,
                                              const std::string& address,
                                              const char* who, int* port);

}  // namespace fanin::bench

#endif  // FANIN_TESTS_BENCH_E2E_GRPC_SERVER_H_
