// write, close, list, groups, stats, nodes and health: one unary call each
// (list pages).
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "client/command.h"
#include "client/exit_codes.h"
#include "client/format.h"
#include "fanin/v1/fanin.grpc.pb.h"
#include "health/v1/health.grpc.pb.h"

namespace fanin::cli {
namespace {

FlagSpec OutputFlag(std::vector<std::string> choices) {
  return {.name = "output",
          .short_name = 'o',
          .type = FlagType::kString,
          .value_name = "FORMAT",
          .help = "output format",
          .choices = std::move(choices)};
}

// Opens the channel to the first server; on failure prints why and sets
// *exit_code.
std::optional<ServerConnection> Connect(const Invocation& inv, int* exit_code) {
  absl::StatusOr<ServerConnection> connection =
      ServerConnection::Open(inv.server);
  if (!connection.ok()) {
    PrintError(connection.status().message());
    *exit_code = kExitFailure;
    return std::nullopt;
  }
  return *std::move(connection);
}

int RpcFailed(const grpc::Status& status, const ServerConnection& connection,
              absl::string_view what) {
  PrintError(RpcErrorMessage(status, connection.server(), what));
  return ExitCodeForStatus(status.error_code());
}

// The answer of the first server of --server that could be reached.
struct Reached {
  // The server that gave `status` (the last one tried); empty when a
  // connection could not be opened, and then exit_code says so.
  std::optional<ServerConnection> connection;
  grpc::Status status;
  int exit_code = kExitOk;
};

// For the read-only commands (list, stats, nodes, health): runs `call`
// against each server of --server in turn while the one before was
// unreachable (UNAVAILABLE), saying so on stderr. Write and close use the
// first server only: a call that failed in flight may have acted already.
Reached CallFirstReachable(
    const Invocation& inv,
    absl::FunctionRef<grpc::Status(const ServerConnection&)> call) {
  Reached r;
  const std::vector<std::string>& servers = inv.server.servers;
  for (size_t i = 0; i < servers.size(); ++i) {
    ServerOptions one = inv.server;
    one.server = servers[i];
    one.servers = {servers[i]};
    absl::StatusOr<ServerConnection> connection = ServerConnection::Open(one);
    if (!connection.ok()) {
      PrintError(connection.status().message());
      r.connection.reset();
      r.exit_code = kExitFailure;
      return r;
    }
    r.connection = *std::move(connection);
    r.status = call(*r.connection);
    if (r.status.error_code() != grpc::StatusCode::UNAVAILABLE ||
        i + 1 == servers.size()) {
      break;
    }
    PrintError(absl::StrCat("cannot reach ", servers[i], ": ",
                            UnavailableReason(r.status.error_message()),
                            "; trying ", servers[i + 1]));
  }
  return r;
}

bool ReadAllStdin(std::string* out) {
  char buf[65536];
  while (true) {
    ssize_t r = read(STDIN_FILENO, buf, sizeof(buf));
    if (r > 0) {
      out->append(buf, static_cast<size_t>(r));
    } else if (r == 0) {
      return true;
    } else if (errno != EINTR) {
      return false;
    }
  }
}

int ConnectionNotFound(uint64_t id, const grpc::Status& status) {
  std::string detail;
  if (!status.error_message().empty() &&
      status.error_message().find("not found") == std::string::npos) {
    detail = absl::StrCat(" (", status.error_message(), ")");
  }
  PrintError(absl::StrCat("connection ", id, " not found", detail,
                          " \xe2\x80\x94 see `fanin list`"));
  return kExitNotFound;
}

// ---- write ----

// One Write RPC carries at most this many bytes: well under gRPC's default
// 4 MiB receive limit (the server's --max_grpc_message_bytes), so a large
// DATA or stdin becomes several Writes, in order, instead of one the server
// must refuse.
constexpr size_t kWritePieceBytes = size_t{1} << 20;
// Back-off while the connection's outbound buffer is full in mid-write
// (the server says "wait for a Writable event and retry"; polling keeps the
// CLI free of a second stream).
constexpr absl::Duration kFullBufferFirstWait = absl::Milliseconds(5);
constexpr absl::Duration kFullBufferMaxWait = absl::Milliseconds(200);

int RunWrite(const Invocation& inv) {
  const auto& args = inv.flags.positional();
  if (args.empty() || args.size() > 2) {
    PrintError("write: want ID [DATA] (see fanin write --help)");
    return kExitUsage;
  }
  uint64_t id;
  if (!ParseConnectionId("write", args[0], &id)) return kExitUsage;
  std::string data;
  if (args.size() == 2 && args[1] != "-") {
    data = args[1];
  } else if (!ReadAllStdin(&data)) {
    PrintError(absl::StrCat("write: cannot read stdin: ", strerror(errno)));
    return kExitFailure;
  }
  bool close_after = inv.flags.Bool("close_after");
  if (data.empty() && !close_after) {
    PrintError(
        "write: nothing to write (DATA and stdin are empty); add "
        "--close-after to only close");
    return kExitUsage;
  }

  int code = kExitOk;
  auto connection = Connect(inv, &code);
  if (!connection) return code;
  auto stub = v1::FanIn::NewStub(connection->channel());
  absl::Duration timeout = inv.flags.Duration("timeout", kDefaultUnaryTimeout);
  v1::WriteRequest request;
  request.set_connection_id(id);
  v1::WriteResponse response;
  grpc::Status status;
  // Pieces go one at a time, in order; the last one carries close_after.
  size_t offset = 0;
  absl::Time progress = absl::Now();
  absl::Duration wait = kFullBufferFirstWait;
  do {
    size_t n = std::min(kWritePieceBytes, data.size() - offset);
    request.set_data(data.substr(offset, n));
    request.set_close_after(close_after && offset + n == data.size());
    grpc::ClientContext context;
    connection->Prepare(&context, timeout);
    status = stub->Write(&context, request, &response);
    if (status.ok()) {
      offset += n;
      progress = absl::Now();
      wait = kFullBufferFirstWait;
      continue;
    }
    // The outbound buffer filled up behind the pieces already queued (the
    // first piece fitting proves one can): wait for the client to drain it,
    // as long as it keeps draining within --timeout.
    bool full = status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED &&
                offset > 0;
    if (!full ||
        (timeout > absl::ZeroDuration() && absl::Now() - progress >= timeout)) {
      break;
    }
    absl::SleepFor(wait);
    wait = std::min(wait * 2, kFullBufferMaxWait);
  } while (offset < data.size());
  std::string what = absl::StrCat("write to connection ", id);
  if (!status.ok() && offset > 0) {
    absl::StrAppend(&what, " (", offset, " of ", data.size(),
                    " bytes were queued before this failure)");
  }
  if (status.error_code() == grpc::StatusCode::NOT_FOUND && offset == 0) {
    return ConnectionNotFound(id, status);
  }
  if (!status.ok()) return RpcFailed(status, *connection, what);

  Output out(stdout);
  if (inv.flags.Get<OutputFormat>("output", OutputFormat::kText) ==
      OutputFormat::kJson) {
    out.Line(MessageJson(response));
  } else if (!inv.flags.Bool("quiet")) {
    out.Line(absl::StrCat("wrote ", data.size(), " bytes to connection ", id,
                          " (", response.queued_bytes(), " bytes queued",
                          close_after ? ", closing after" : "", ")"));
  }
  return out.Flush() ? kExitOk : OutputFailureExit(out);
}

// ---- close ----

int RunClose(const Invocation& inv) {
  const auto& args = inv.flags.positional();
  if (args.size() != 1) {
    PrintError(
        "close: want exactly one connection ID (see fanin close --help)");
    return kExitUsage;
  }
  uint64_t id;
  if (!ParseConnectionId("close", args[0], &id)) return kExitUsage;
  int code = kExitOk;
  auto connection = Connect(inv, &code);
  if (!connection) return code;
  auto stub = v1::FanIn::NewStub(connection->channel());
  grpc::ClientContext context;
  connection->Prepare(&context,
                      inv.flags.Duration("timeout", kDefaultUnaryTimeout));
  v1::CloseConnectionRequest request;
  request.set_connection_id(id);
  request.set_abort(inv.flags.Bool("abort"));
  v1::CloseConnectionResponse response;
  grpc::Status status = stub->CloseConnection(&context, request, &response);
  if (status.error_code() == grpc::StatusCode::NOT_FOUND) {
    return ConnectionNotFound(id, status);
  }
  if (!status.ok()) {
    return RpcFailed(status, *connection,
                     absl::StrCat("close connection ", id));
  }
  Output out(stdout);
  if (!inv.flags.Bool("quiet")) {
    out.Line(absl::StrCat(request.abort() ? "aborted" : "closing",
                          " connection ", id));
  }
  return out.Flush() ? kExitOk : OutputFailureExit(out);
}

// ---- list ----

int RunList(const Invocation& inv) {
  if (!inv.flags.positional().empty()) {
    PrintError(
        "list: takes no arguments; filter with --listener or --node (see "
        "fanin list --help)");
    return kExitUsage;
  }
  bool json = inv.flags.Get<OutputFormat>("output", OutputFormat::kText) ==
              OutputFormat::kJson;
  absl::Duration timeout = inv.flags.Duration("timeout", kDefaultUnaryTimeout);
  uint64_t page_size =
      std::min<uint64_t>(inv.flags.Uint("page_size", 1000), 1000);

  Output out(stdout);
  std::vector<v1::Connection> rows;
  v1::ListConnectionsRequest request;
  request.set_listener(inv.flags.String("listener", ""));
  request.set_node(inv.flags.String("node", ""));
  request.set_page_size(static_cast<uint32_t>(page_size));
  absl::Time now = absl::Now();
  v1::ListConnectionsResponse response;
  auto list_page = [&](const ServerConnection& connection) {
    grpc::ClientContext context;
    connection.Prepare(&context, timeout);
    response.Clear();
    return v1::FanIn::NewStub(connection.channel())
        ->ListConnections(&context, request, &response);
  };
  // The first page from the first server that answers; the others from it.
  Reached first = CallFirstReachable(inv, list_page);
  if (!first.connection) return first.exit_code;
  const ServerConnection& connection = *first.connection;
  grpc::Status status = first.status;
  while (true) {
    if (!status.ok()) return RpcFailed(status, connection, "list connections");
    for (const v1::Connection& c : response.connections()) {
      if (json) {
        // Streamed page by page: memory stays flat for any table size.
        if (!out.Line(MessageJson(c))) {
          return OutputFailureExit(out);
        }
      } else {
        rows.push_back(c);
      }
    }
    if (json && !out.Flush()) return OutputFailureExit(out);
    if (response.next_page_token().empty()) break;
    request.set_page_token(response.next_page_token());
    status = list_page(connection);
  }

  if (!json) {
    // NODE only in cluster mode, where connections have an owner.
    const bool nodes =
        std::any_of(rows.begin(), rows.end(),
                    [](const v1::Connection& c) { return !c.node().empty(); });
    std::vector<std::vector<std::string>> table = {
        {"ID", "LISTENER", "REMOTE", "AGE", "IN", "OUT", "QUEUED"}};
    std::vector<bool> right = {true, false, false, false, true, true, true};
    for (const v1::Connection& c : rows) {
      absl::Time opened =
          absl::FromUnixNanos(static_cast<int64_t>(c.opened_unix_nano()));
      table.push_back(
          {absl::StrCat(c.connection_id()), EscapeBytes(c.listener()),
           EscapeBytes(c.remote_address()), FormatAge(now - opened),
           absl::StrCat(c.bytes_received()), absl::StrCat(c.bytes_sent()),
           absl::StrCat(c.queued_bytes())});
    }
    if (nodes) {
      table[0].insert(table[0].begin() + 1, "NODE");
      for (size_t i = 1; i < table.size(); ++i) {
        const std::string& node = rows[i - 1].node();
        table[i].insert(table[i].begin() + 1,
                        node.empty() ? "-" : EscapeBytes(node));
      }
      right.insert(right.begin() + 1, false);
    }
    if (!out.Write(FormatTable(table, right))) return OutputFailureExit(out);
  }
  return out.Flush() ? kExitOk : OutputFailureExit(out);
}

// ---- stats ----

int RunStats(const Invocation& inv) {
  if (!inv.flags.positional().empty()) {
    PrintError("stats: takes no arguments (see fanin stats --help)");
    return kExitUsage;
  }
  v1::GetStatsResponse response;
  Reached r = CallFirstReachable(inv, [&](const ServerConnection& c) {
    grpc::ClientContext context;
    c.Prepare(&context, inv.flags.Duration("timeout", kDefaultUnaryTimeout));
    return v1::FanIn::NewStub(c.channel())
        ->GetStats(&context, v1::GetStatsRequest(), &response);
  });
  if (!r.connection) return r.exit_code;
  if (!r.status.ok()) return RpcFailed(r.status, *r.connection, "get stats");
  Output out(stdout);
  if (inv.flags.Get<OutputFormat>("output", OutputFormat::kText) ==
      OutputFormat::kJson) {
    out.Line(MessageJson(response));
  } else {
    out.Write(FormatStatsText(response));
  }
  return out.Flush() ? kExitOk : OutputFailureExit(out);
}

// ---- groups ----

int RunGroups(const Invocation& inv) {
  if (inv.flags.positional().size() > 1) {
    PrintError(
        "groups: takes at most one group name (see fanin groups --help)");
    return kExitUsage;
  }
  v1::ListGroupsRequest request;
  if (!inv.flags.positional().empty()) {
    request.set_group(inv.flags.positional()[0]);
  }
  v1::ListGroupsResponse response;
  Reached r = CallFirstReachable(inv, [&](const ServerConnection& c) {
    grpc::ClientContext context;
    c.Prepare(&context, inv.flags.Duration("timeout", kDefaultUnaryTimeout));
    return v1::FanIn::NewStub(c.channel())
        ->ListGroups(&context, request, &response);
  });
  if (!r.connection) return r.exit_code;
  if (!r.status.ok()) return RpcFailed(r.status, *r.connection, "list groups");
  Output out(stdout);
  if (inv.flags.Get<OutputFormat>("output", OutputFormat::kText) ==
      OutputFormat::kJson) {
    for (const v1::GroupInfo& g : response.groups()) {
      if (!out.Line(MessageJson(g))) break;
    }
  } else {
    out.Write(FormatGroupsText(response, absl::Now()));
  }
  return out.Flush() ? kExitOk : OutputFailureExit(out);
}

// ---- health ----

int RunHealth(const Invocation& inv) {
  if (!inv.flags.positional().empty()) {
    PrintError("health: takes no arguments (see fanin health --help)");
    return kExitUsage;
  }
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(inv.flags.String("service", ""));
  grpc::health::v1::HealthCheckResponse response;
  Reached r = CallFirstReachable(inv, [&](const ServerConnection& c) {
    grpc::ClientContext context;
    c.Prepare(&context, inv.flags.Duration("timeout", absl::Seconds(5)));
    return grpc::health::v1::Health::NewStub(c.channel())
        ->Check(&context, request, &response);
  });
  if (!r.connection) return r.exit_code;
  if (!r.status.ok()) return RpcFailed(r.status, *r.connection, "health check");
  std::string name = grpc::health::v1::HealthCheckResponse::ServingStatus_Name(
      response.status());
  Output out(stdout);
  if (!inv.flags.Bool("quiet")) out.Line(name);
  out.Flush();
  if (response.status() != grpc::health::v1::HealthCheckResponse::SERVING) {
    PrintError(absl::StrCat(r.connection->server(), " answers but is ", name));
    return kExitNotServing;
  }
  return kExitOk;
}

// ---- nodes ----

int RunNodes(const Invocation& inv) {
  if (!inv.flags.positional().empty()) {
    PrintError("nodes: takes no arguments (see fanin nodes --help)");
    return kExitUsage;
  }
  v1::ListNodesResponse response;
  Reached r = CallFirstReachable(inv, [&](const ServerConnection& c) {
    grpc::ClientContext context;
    c.Prepare(&context, inv.flags.Duration("timeout", kDefaultUnaryTimeout));
    return v1::FanIn::NewStub(c.channel())
        ->ListNodes(&context, v1::ListNodesRequest(), &response);
  });
  if (!r.connection) return r.exit_code;
  if (!r.status.ok()) return RpcFailed(r.status, *r.connection, "list nodes");
  Output out(stdout);
  if (inv.flags.Get<OutputFormat>("output", OutputFormat::kText) ==
      OutputFormat::kJson) {
    for (const v1::NodeInfo& node : response.nodes()) {
      if (!out.Line(MessageJson(node))) break;
    }
  } else {
    out.Write(FormatNodesTable(response, absl::Now()));
  }
  return out.Flush() ? kExitOk : OutputFailureExit(out);
}

FlagSpec QuietFlag(absl::string_view what) {
  return {.name = "quiet",
          .short_name = 'q',
          .type = FlagType::kBool,
          .help = std::string(what)};
}

}  // namespace

Command WriteCommand() {
  return {
      .name = "write",
      .synopsis = "write ID [DATA|-] [flags]",
      .summary = "send bytes to a connection (DATA, or stdin)",
      .description =
          "Queues bytes for connection ID: DATA as given, or stdin "
          "(binary-safe,\n"
          "read to EOF) when DATA is absent or \"-\". Prints how many bytes\n"
          "were written and how many wait in the connection's outbound "
          "buffer.\n"
          "With --close-after the connection is closed gracefully once the\n"
          "bytes are flushed (DATA may then be empty). DATA that starts with\n"
          "'-' goes after \"--\": fanin write 42 -- -x.\n"
          "Any size: the bytes go as Writes of at most 1 MiB, in order (under\n"
          "the server's 4 MiB message limit); the last carries --close-after.\n"
          "While the connection's outbound buffer is full, write waits for\n"
          "the client to drain it, up to --timeout per piece. -o json prints\n"
          "the last fanin.v1.WriteResponse in protobuf's JSON mapping.\n",
      .examples =
          "  fanin write 42 'hello'\n"
          "  printf 'HTTP/1.0 200 OK\\r\\n\\r\\n' | fanin write 42 "
          "--close-after\n"
          "  fanin write 42 - < reply.bin\n"
          "  fanin write 42 --close-after ''   # just close, after "
          "pending writes\n",
      .flags = {{.name = "close_after",
                 .type = FlagType::kBool,
                 .help = "close gracefully once these bytes are flushed"},
                OutputFlag({"text", "json"}),
                UnaryTimeoutFlag(),
                QuietFlag("print nothing on success")},
      .run = RunWrite,
  };
}

Command CloseCommand() {
  return {
      .name = "close",
      .synopsis = "close ID [--abort] [flags]",
      .summary = "close a connection (gracefully, or --abort with a RST)",
      .description =
          "Closes connection ID: gracefully (pending writes are flushed, then\n"
          "FIN), or with --abort at once with a RST, discarding pending "
          "writes.\n",
      .examples =
          "  fanin close 42\n"
          "  fanin close 42 --abort\n",
      .flags = {{.name = "abort",
                 .type = FlagType::kBool,
                 .help = "reset at once (RST), discarding pending writes"},
                UnaryTimeoutFlag(),
                QuietFlag("print nothing on success")},
      .run = RunClose,
  };
}

Command ListCommand() {
  return {
      .name = "list",
      .synopsis = "list [flags]",
      .summary = "table of open connections (all pages)",
      .description =
          "Lists every open connection, paging through the server's table:\n"
          "id, listener, remote address, age, bytes in (received from the\n"
          "client), bytes out (sent to it) and bytes queued for it; in a\n"
          "cluster also the node that owns it (NODE, after the id). With\n"
          "-o json, one fanin.v1.Connection per line in protobuf's JSON\n"
          "mapping.\n",
      .examples =
          "  fanin list\n"
          "  fanin list --listener default -o json | jq "
          ".connection_id\n"
          "  fanin list --node node-a\n",
      .flags = {{.name = "listener",
                 .type = FlagType::kString,
                 .value_name = "NAME",
                 .help = "only connections of this listener"},
                {.name = "node",
                 .type = FlagType::kString,
                 .value_name = "NAME",
                 .help = "cluster: only connections this node owns"},
                {.name = "page_size",
                 .type = FlagType::kUint,
                 .value_name = "N",
                 .help = "connections per call (default and max 1000)"},
                OutputFlag({"text", "json"}),
                UnaryTimeoutFlag()},
      .run = RunList,
  };
}

Command StatsCommand() {
  return {
      .name = "stats",
      .synopsis = "stats [flags]",
      .summary = "server-wide counters",
      .description =
          "Prints the server's counters: poller, connections, "
          "events, bytes,\nsubscribers and the retained seq "
          "range; in a cluster also the node's\nname and the "
          "cluster stream's seq range. -o json prints the\n"
          "fanin.v1.GetStatsResponse in protobuf's JSON mapping.\n",
      .examples =
          "  fanin stats\n"
          "  fanin stats -o json | jq .events_lost\n",
      .flags = {OutputFlag({"text", "json"}), UnaryTimeoutFlag()},
      .run = RunStats,
  };
}

Command GroupsCommand() {
  return {
      .name = "groups",
      .synopsis = "groups [NAME] [flags]",
      .summary = "worker-pool groups: members and their connections",
      .description =
          "Lists the server's worker-pool groups (fanin watch --group): each\n"
          "group's delivery, connections (and how many wait for a member),\n"
          "queued events, lossless backlog, handovers, and per member its\n"
          "id, peer, connections, queued and delivered events. NAME: only\n"
          "that group (exit 4 when it does not exist). -o json prints one\n"
          "fanin.v1.GroupInfo per line in protobuf's JSON mapping.\n",
      .examples =
          "  fanin groups\n"
          "  fanin groups workers -o json | jq '.members[].connections'\n",
      .flags = {OutputFlag({"text", "json"}), UnaryTimeoutFlag()},
      .run = RunGroups,
  };
}

Command NodesCommand() {
  return {
      .name = "nodes",
      .synopsis = "nodes [flags]",
      .summary = "the nodes of the cluster (one line in standalone)",
      .description =
          "Lists the nodes of the cluster: name, state (up, draining, left,\n"
          "lost), gRPC address, open connections, when it was last seen and\n"
          "its incarnation. A standalone server is one node with no name\n"
          "(shown as -). -o json prints one fanin.v1.NodeInfo per line in\n"
          "protobuf's JSON mapping.\n",
      .examples =
          "  fanin nodes\n"
          "  fanin nodes -o json | jq -r 'select(.state == "
          "\"NODE_STATE_UP\") | .grpc_address'\n"
          "  fanin nodes --server a:50051,b:50051   # whichever answers\n",
      .flags = {OutputFlag({"text", "json"}), UnaryTimeoutFlag()},
      .run = RunNodes,
  };
}

Command HealthCommand() {
  return {
      .name = "health",
      .synopsis = "health [flags]",
      .summary = "exit 0 when the server is SERVING (a probe)",
      .description =
          "Asks the server's grpc.health.v1 service. Prints the status and\n"
          "exits 0 when SERVING, 12 when the server answers but is not\n"
          "serving, 3 when it cannot be reached.\n",
      .examples =
          "  fanin health\n"
          "  until fanin health -q; do sleep 1; done\n",
      .flags = {{.name = "service",
                 .type = FlagType::kString,
                 .value_name = "NAME",
                 .help = "ask about this service (default: the whole "
                         "server)"},
                {.name = "timeout",
                 .type = FlagType::kDuration,
                 .value_name = "DURATION",
                 .help = "give up after DURATION (default 5s)"},
                QuietFlag("print nothing; only the exit code tells")},
      .run = RunHealth,
  };
}

}  // namespace fanin::cli
