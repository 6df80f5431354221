// fanin_server: see README.md, or run with --help.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "server/fanin_server.h"
#include "server/server_flags.h"

namespace {

bool WriteReadyFile(const std::string& path, const fanin::FaninServer& server) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << "grpc " << server.grpc_address() << "\n";
    for (const auto& [name, address] : server.listen_addresses()) {
      out << "listen " << name << " " << address << "\n";
    }
    if (!out) return false;
  }
  return std::rename(tmp.c_str(), path.c_str()) == 0;
}

}  // namespace

int main(int argc, char** argv) {
  // Signals are taken synchronously by sigwait below; every thread started
  // from here on inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  auto flags = fanin::ParseServerFlags(argc, argv);
  if (!flags.ok()) {
    std::fprintf(stderr, "fanin_server: %s\n",
                 std::string(flags.status().message()).c_str());
    return 2;
  }
  auto server = fanin::FaninServer::Start(flags->config);
  if (!server.ok()) {
    std::fprintf(stderr, "fanin_server: %s\n",
                 std::string(server.status().message()).c_str());
    return 1;
  }
  for (const auto& [name, address] : (*server)->listen_addresses()) {
    std::fprintf(stderr, "fanin_server: listener %s on %s%s\n", name.c_str(),
                 address.c_str(),
                 std::find(flags->config.core.pull_listeners.begin(),
                           flags->config.core.pull_listeners.end(),
                           name) != flags->config.core.pull_listeners.end()
                     ? " (pull mode)"
                     : "");
  }
  std::fprintf(stderr, "fanin_server: gRPC on %s (poller %s, epoch %s)\n",
               (*server)->grpc_address().c_str(),
               (*server)->core()->GetStats().poller.c_str(),
               (*server)->hub()->epoch().c_str());
  if (!flags->ready_file.empty() &&
      !WriteReadyFile(flags->ready_file, **server)) {
    std::fprintf(stderr, "fanin_server: cannot write --ready_file %s\n",
                 flags->ready_file.c_str());
    return 1;
  }

  int sig = 0;
  sigwait(&signals, &sig);
  std::fprintf(stderr,
               "fanin_server: %s, draining (a second signal exits now)\n",
               strsignal(sig));
  std::thread([signals] {
    int again = 0;
    sigwait(&signals, &again);
    std::fprintf(stderr, "fanin_server: %s again, exiting now\n",
                 strsignal(again));
    _exit(1);
  }).detach();
  (*server)->Shutdown();
  std::fprintf(stderr, "fanin_server: stopped\n");
  return 0;
}
