// fanin_server: see README.md, or run with --help.
//
// Signals: SIGTERM/SIGINT drain gracefully (bounded by --drain_timeout) and
// exit 0; a second one exits at once with 1. SIGHUP re-reads
// --auth_tokens_file and the --listen_tls certificates and keys.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "server/base/log.h"
#include "server/fanin_server.h"
#include "server/server_flags.h"

namespace {

using fanin::base::Log;
using fanin::base::LogLevel;

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
  // Debian's Abseil is built without NDEBUG, so every Mutex lock would update
  // the deadlock graph under a global lock (~375 instructions a lock/unlock
  // pair instead of ~70 in callgrind). Tests keep the detection on.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  // Signals are taken synchronously by sigwait below; every thread started
  // from here on inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  auto flags = fanin::ParseServerFlags(argc, argv);
  if (!flags.ok()) {
    // Before the log format is known: plain text for a human at a terminal.
    std::fprintf(stderr, "fanin_server: %s\n",
                 std::string(flags.status().message()).c_str());
    return 2;
  }
  fanin::base::ConfigureLogging(flags->log_level, flags->log_format);
  auto server = fanin::FaninServer::Start(flags->config);
  if (!server.ok()) {
    Log(LogLevel::kError, "cannot start",
        {{"error", std::string(server.status().message())}});
    return 1;
  }
  const auto& pull = flags->config.core.pull_listeners;
  const auto& proxy = flags->config.core.proxy_protocol_listeners;
  for (const auto& [name, address] : (*server)->listen_addresses()) {
    const char* tls = "off";
    for (const auto& t : flags->config.core.tls) {
      if (t.listener == name) {
        tls = t.files.client_ca_file.empty() ? "tls" : "mtls";
      }
    }
    Log(LogLevel::kInfo, "listener bound",
        {{"listener", name},
         {"address", address},
         {"mode", std::find(pull.begin(), pull.end(), name) != pull.end()
                      ? "pull"
                      : "push"},
         {"tls", tls},
         {"proxy_protocol",
          std::find(proxy.begin(), proxy.end(), name) != proxy.end() ? "on"
                                                                     : "off"}});
  }
  if (!flags->ready_file.empty() &&
      !WriteReadyFile(flags->ready_file, **server)) {
    Log(LogLevel::kError, "cannot write --ready_file",
        {{"path", flags->ready_file}});
    return 1;
  }

  int sig = 0;
  for (;;) {
    sigwait(&signals, &sig);
    if (sig != SIGHUP) break;
    absl::Status reloaded = (*server)->ReloadCredentials();
    if (!reloaded.ok()) {
      Log(LogLevel::kError, "credentials not reloaded; the old ones stay",
          {{"error", std::string(reloaded.message())}});
    } else {
      Log(LogLevel::kInfo, "credentials reloaded",
          {{"tls_listeners", flags->config.core.tls.size()}});
    }
  }
  Log(LogLevel::kInfo, "signal received, draining",
      {{"signal", strsignal(sig)}, {"second_signal", "exits at once"}});
  std::thread([signals] {
    int again = 0;
    do {
      sigwait(&signals, &again);
    } while (again == SIGHUP);
    Log(LogLevel::kWarning, "second signal, exiting without drain",
        {{"signal", strsignal(again)}});
    _exit(1);
  }).detach();
  (*server)->Shutdown();
  Log(LogLevel::kInfo, "stopped");
  return 0;
}
