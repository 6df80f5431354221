// Command-line and environment configuration of fanin_server.
//
// Every flag can also come from the environment as FANIN_<FLAG> (upper
// case), e.g. FANIN_GRPC_ADDRESS=127.0.0.1:6000; the command line wins.
// --listen and --pull repeat; their variables take comma-separated lists.
#ifndef FANIN_SERVER_SERVER_FLAGS_H_
#define FANIN_SERVER_SERVER_FLAGS_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/base/log.h"
#include "server/fanin_server.h"

namespace fanin {

struct ServerFlags {
  ServerConfig config;
  std::string ready_file;
  base::LogLevel log_level = base::LogLevel::kInfo;
  base::LogFormat log_format = base::LogFormat::kText;
};

// Parses argv (and FANIN_* variables). `--help` prints usage and exits 0.
// INVALID_ARGUMENT says which flag is wrong and why.
absl::StatusOr<ServerFlags> ParseServerFlags(int argc, char** argv);

}  // namespace fanin

#endif  // FANIN_SERVER_SERVER_FLAGS_H_
