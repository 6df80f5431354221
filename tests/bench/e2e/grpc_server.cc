#include "tests/bench/e2e/grpc_server.h"

#include <cstdio>
#include <cstdlib>

namespace fanin::bench {

std::unique_ptr<grpc::Server> StartGrpcServer(grpc::Service* service,
                                              const std::string& address,
                                              const char* who, int* port) {
  grpc::ServerBuilder builder;
  *port = 0;
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(), port);
  builder.RegisterService(service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || *port == 0) {
    std::fprintf(stderr, "%s: cannot listen on %s\n", who, address.c_str());
    std::exit(2);
  }
  return server;
}

}  // namespace fanin::bench
