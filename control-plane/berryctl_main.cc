// berryctl: see control-plane/berryctl.h.
#include <iostream>
#include <string>
#include <vector>

#include "control-plane/berryctl.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  return berry::berryctl::RunBerryctl(args, std::cout, std::cerr);
}
