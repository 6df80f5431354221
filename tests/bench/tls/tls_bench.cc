// TLS benchmarks for raw listeners, one binary, three roles:
//
//   tls_bench floor --listen=127.0.0.1:9000 --cert=c.pem --key=k.pem
//       The TLS floor: a bare single-threaded edge-triggered epoll reader
//       with non-blocking OpenSSL (the same SSL_CTX settings fanin uses:
//       TLS 1.3, read-ahead, released buffers, one ticket). Accepts,
//       handshakes, reads and drops plaintext; prints one JSON line a second
//       with the plaintext bytes and handshakes so far.
//   tls_bench load --target=127.0.0.1:9000 --connections=100 --size=64
//       --per_write=16 --seconds=10 [--plain] [--idle]
//       N client connections on one epoll thread, each writing --size-byte
//       messages (--per_write of them per write, so one TLS record) as fast
//       as the receiver takes them (TLS, or plain TCP with --plain); prints
//       {"messages":..,"seconds":..} for what was written. --idle only
//       connects and handshakes, then holds the connections.
//   tls_bench handshakes --target=127.0.0.1:9000 --parallel=8 --seconds=10
//       Full TLS handshakes back to back, --parallel at a time; then close.
//       Prints {"handshakes":..,"seconds":..}.
//
// Ingest is read at the receiver (the floor's line, fanin's GetStats
// bytes_received) divided by --size. See tests/bench/tls/run.sh.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:0", "floor: IPv4 HOST:PORT");
ABSL_FLAG(std::string, cert, "", "floor: certificate chain (PEM)");
ABSL_FLAG(std::string, key, "", "floor: private key (PEM)");
ABSL_FLAG(std::string, target, "127.0.0.1:9000", "load/handshakes: address");
ABSL_FLAG(int, connections, 100, "load: connections");
ABSL_FLAG(int, size, 64, "load: bytes per message");
ABSL_FLAG(int, per_write, 1, "load: messages per write (one TLS record)");
ABSL_FLAG(int, parallel, 8, "handshakes: at once");
ABSL_FLAG(double, seconds, 10, "load/handshakes: how long");
ABSL_FLAG(bool, plain, false, "load: plain TCP instead of TLS");
ABSL_FLAG(bool, idle, false,
          "load: connect (and handshake) only, then hold the connections "
          "idle for --seconds (memory per idle connection)");

namespace {

sockaddr_in ParseAddress(const std::string& text) {
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  const size_t colon = text.rfind(':');
  int port = 0;
  if (colon == std::string::npos ||
      !absl::SimpleAtoi(text.substr(colon + 1), &port) ||
      inet_pton(AF_INET, text.substr(0, colon).c_str(), &sa.sin_addr) != 1) {
    std::fprintf(stderr, "bad address %s\n", text.c_str());
    std::exit(2);
  }
  sa.sin_port = htons(static_cast<uint16_t>(port));
  return sa;
}

// --- floor ---------------------------------------------------------------

struct FloorConn {
  int fd;
  SSL* ssl;
  bool established = false;
};

int Floor() {
  SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION |
                               SSL_OP_CIPHER_SERVER_PREFERENCE |
                               SSL_OP_NO_COMPRESSION);
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS |
                            SSL_MODE_ENABLE_PARTIAL_WRITE |
                            SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  SSL_CTX_set_read_ahead(ctx, 1);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_num_tickets(ctx, 1);
  if (SSL_CTX_use_certificate_chain_file(
          ctx, absl::GetFlag(FLAGS_cert).c_str()) != 1 ||
      SSL_CTX_use_PrivateKey_file(ctx, absl::GetFlag(FLAGS_key).c_str(),
                                  SSL_FILETYPE_PEM) != 1) {
    std::fprintf(stderr, "cannot load --cert/--key\n");
    return 2;
  }
  sockaddr_in sa = ParseAddress(absl::GetFlag(FLAGS_listen));
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (bind(lfd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0 ||
      listen(lfd, 4096) != 0) {
    std::perror("bind/listen");
    return 1;
  }
  socklen_t len = sizeof(sa);
  getsockname(lfd, reinterpret_cast<sockaddr*>(&sa), &len);
  std::printf("{\"listen\":\"127.0.0.1:%d\"}\n", ntohs(sa.sin_port));
  std::fflush(stdout);
  int ep = epoll_create1(0);
  epoll_event ev{EPOLLIN, {.ptr = nullptr}};
  epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
  uint64_t bytes = 0, handshakes = 0;
  std::vector<char> buf(64 << 10);
  absl::Time next_report = absl::Now() + absl::Seconds(1);
  std::vector<epoll_event> events(1024);
  for (;;) {
    int n = epoll_wait(ep, events.data(), static_cast<int>(events.size()), 200);
    for (int i = 0; i < n; ++i) {
      auto* c = static_cast<FloorConn*>(events[i].data.ptr);
      if (c == nullptr) {
        for (;;) {
          int fd = accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK);
          if (fd < 0) break;
          setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
          auto* nc = new FloorConn{fd, SSL_new(ctx)};
          SSL_set_fd(nc->ssl, fd);
          SSL_set_accept_state(nc->ssl);
          epoll_event cev{EPOLLIN | EPOLLOUT | EPOLLET | EPOLLRDHUP,
                          {.ptr = nc}};
          epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev);
        }
        continue;
      }
      bool done = false;
      if (!c->established) {
        int r = SSL_do_handshake(c->ssl);
        if (r == 1) {
          c->established = true;
          ++handshakes;
        } else {
          int e = SSL_get_error(c->ssl, r);
          done = e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE;
        }
      }
      // Edge-triggered: drain to WANT_READ.
      while (c->established && !done) {
        size_t got = 0;
        if (SSL_read_ex(c->ssl, buf.data(), buf.size(), &got) == 1) {
          bytes += got;
          continue;
        }
        int e = SSL_get_error(c->ssl, 0);
        done = e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE;
        break;
      }
      ERR_clear_error();
      if (done) {
        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, nullptr);
        close(c->fd);
        SSL_free(c->ssl);
        delete c;
      }
    }
    if (absl::Now() >= next_report) {
      std::printf("{\"bytes\":%lu,\"handshakes\":%lu}\n",
                  static_cast<unsigned long>(bytes),
                  static_cast<unsigned long>(handshakes));
      std::fflush(stdout);
      next_report += absl::Seconds(1);
    }
  }
}

// --- clients -------------------------------------------------------------

struct Client {
  int fd = -1;
  SSL* ssl = nullptr;
  bool established = false;
};

SSL_CTX* ClientContext() {
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  SSL_CTX_set_mode(
      ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  return ctx;
}

bool Open(Client* c, const sockaddr_in& sa, SSL_CTX* ctx, int ep) {
  c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  int one = 1;
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (connect(c->fd, reinterpret_cast<const sockaddr*>(&sa), sizeof(sa)) != 0 &&
      errno != EINPROGRESS) {
    close(c->fd);
    return false;
  }
  c->established = false;
  if (ctx != nullptr) {
    c->ssl = SSL_new(ctx);
    SSL_set_fd(c->ssl, c->fd);
    SSL_set_connect_state(c->ssl);
  }
  epoll_event ev{EPOLLIN | EPOLLOUT | EPOLLET, {.ptr = c}};
  epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
  return true;
}

void Drop(Client* c, int ep) {
  epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, nullptr);
  if (c->ssl != nullptr) SSL_free(c->ssl);
  c->ssl = nullptr;
  close(c->fd);
}

int Load() {
  const bool plain = absl::GetFlag(FLAGS_plain);
  SSL_CTX* ctx = plain ? nullptr : ClientContext();
  const sockaddr_in sa = ParseAddress(absl::GetFlag(FLAGS_target));
  const int per_write = absl::GetFlag(FLAGS_per_write);
  const std::string message(
      static_cast<size_t>(absl::GetFlag(FLAGS_size)) * per_write, 'm');
  std::vector<Client> clients(absl::GetFlag(FLAGS_connections));
  int ep = epoll_create1(0);
  for (Client& c : clients) {
    if (!Open(&c, sa, ctx, ep)) return 1;
  }
  // Whole messages only: a short TLS write keeps its record; a short plain
  // write is finished before the next message.
  std::vector<size_t> partial(clients.size(), 0);
  uint64_t messages = 0, established = 0;
  const bool idle = absl::GetFlag(FLAGS_idle);
  const absl::Time start = absl::Now();
  const absl::Time end = start + absl::Seconds(absl::GetFlag(FLAGS_seconds));
  std::vector<epoll_event> events(1024);
  while (absl::Now() < end) {
    int n = epoll_wait(ep, events.data(), static_cast<int>(events.size()), 100);
    for (int i = 0; i < n; ++i) {
      Client* c = static_cast<Client*>(events[i].data.ptr);
      const size_t idx = static_cast<size_t>(c - clients.data());
      if (!plain && !c->established) {
        int r = SSL_do_handshake(c->ssl);
        if (r != 1) continue;
        c->established = true;
        ++established;
      }
      if (idle) continue;
      for (int k = 0; k < 4096; ++k) {  // bounded per wake-up
        const char* p = message.data() + partial[idx];
        const size_t left = message.size() - partial[idx];
        ssize_t w;
        if (plain) {
          w = send(c->fd, p, left, MSG_NOSIGNAL);
        } else {
          size_t written = 0;
          w = SSL_write_ex(c->ssl, p, left, &written) == 1
                  ? static_cast<ssize_t>(written)
                  : -1;
        }
        if (w <= 0) break;
        partial[idx] += static_cast<size_t>(w);
        if (partial[idx] == message.size()) {
          partial[idx] = 0;
          messages += per_write;
        }
      }
      ERR_clear_error();
    }
  }
  const double secs = absl::ToDoubleSeconds(absl::Now() - start);
  std::printf("{\"messages\":%lu,\"established\":%lu,\"seconds\":%.3f}\n",
              static_cast<unsigned long>(messages),
              static_cast<unsigned long>(established), secs);
  for (Client& c : clients) Drop(&c, ep);
  return 0;
}

int Handshakes() {
  SSL_CTX* ctx = ClientContext();
  const sockaddr_in sa = ParseAddress(absl::GetFlag(FLAGS_target));
  std::vector<Client> clients(absl::GetFlag(FLAGS_parallel));
  int ep = epoll_create1(0);
  for (Client& c : clients) {
    if (!Open(&c, sa, ctx, ep)) return 1;
  }
  uint64_t done = 0, failed = 0;
  const absl::Time start = absl::Now();
  const absl::Time end = start + absl::Seconds(absl::GetFlag(FLAGS_seconds));
  std::vector<epoll_event> events(1024);
  while (absl::Now() < end) {
    int n = epoll_wait(ep, events.data(), static_cast<int>(events.size()), 100);
    for (int i = 0; i < n; ++i) {
      Client* c = static_cast<Client*>(events[i].data.ptr);
      int r = SSL_do_handshake(c->ssl);
      if (r != 1) {
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) continue;
        ++failed;
      } else {
        ++done;
      }
      ERR_clear_error();
      Drop(c, ep);
      if (!Open(c, sa, ctx, ep)) return 1;
    }
  }
  const double secs = absl::ToDoubleSeconds(absl::Now() - start);
  std::printf("{\"handshakes\":%lu,\"failed\":%lu,\"seconds\":%.3f}\n",
              static_cast<unsigned long>(done),
              static_cast<unsigned long>(failed), secs);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  std::vector<char*> rest = absl::ParseCommandLine(argc, argv);
  const std::string role = rest.size() > 1 ? rest[1] : "";
  if (role == "floor") return Floor();
  if (role == "load") return Load();
  if (role == "handshakes") return Handshakes();
  std::fprintf(stderr, "usage: tls_bench floor|load|handshakes [flags]\n");
  return 2;
}
