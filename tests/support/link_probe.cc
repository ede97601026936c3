// An empty program for tests/support/forbid_libraries.sh. It is linked with
// --no-as-needed, so the libraries it needs are every library on its link
// line (what the target it links hands on), not only those it calls into.
int main() { return 0; }
