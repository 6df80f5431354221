// fanin: watch and steer a running fanin server from a terminal or a script.
#include <string>
#include <vector>

#include "client/cli.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  return fanin::cli::RunCli(args);
}
