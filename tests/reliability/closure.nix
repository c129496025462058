# A closure of n store paths with references, for the fault suite and
# bench/run-load.sh: path i refers to path i-1 and to path i/2; its file
# is 4 MiB when i is a multiple of bigEvery, else 8 KiB times
# 1 + (37 i mod smallSteps). Built with /bin/sh, outside any sandbox.
{ n, bigEvery, smallSteps, tag }:
let
  mod = a: b: a - (a / b) * b;
  size = i: if mod i bigEvery == 0 then 4194304 else 8192 * (1 + mod (i * 37) smallSteps);
  mk = i: derivation {
    name = "narcache-${tag}-${toString i}";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" ("/bin/mkdir $out; /usr/bin/head -c ${toString (size i)} /dev/zero"
      + " | /usr/bin/tr '\\0' '${toString (mod i 10)}' > $out/data"
      + (if i > 0 then "; echo ${mk (i - 1)} ${mk (i / 2)} > $out/refs" else "")) ];
  };
in mk (n - 1)
