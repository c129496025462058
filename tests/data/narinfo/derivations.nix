let
  sh = args: name: derivation {
    inherit name;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" args ];
  };
in rec {
  # text CA (builtins.toFile), no references / with a reference
  t1 = builtins.toFile "t1" "hello";
  tref = builtins.toFile "t-ref" "points at ${./f1}\n";
  # input-addressed, no references
  noref = sh "echo no-references > $out" "noref-demo";
  # references another store path (f1) and itself
  ref = sh "echo ${./f1} > $out; echo $out >> $out" "ref-demo";
  # self-reference only
  self = sh "echo $out > $out" "self-demo";
  # directory output referencing a CA dir and another derivation output
  dep = sh "/bin/mkdir $out; echo ${./tree} > $out/tree; echo ${noref} > $out/noref" "dep-demo";
}
