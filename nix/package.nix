# The `sluice` binary, built from the repository's Cargo.lock.
{ lib, rustPlatform }:

rustPlatform.buildRustPackage {
  pname = "sluice";
  version = "0.1.0";

  # The repository around nix/, without build output and installed test clients.
  src = lib.cleanSourceWith {
    src = ../.;
    filter = path: type:
      let base = baseNameOf path; in
      !(builtins.elem base [ "target" "node_modules" "venv" "sluice-data" "result" ]);
  };

  cargoLock.lockFile = ../Cargo.lock;
  cargoBuildFlags = [ "--bin" "sluice" ];

  # The test suite needs ffmpeg, GStreamer, Chromium and free ports: it runs through
  # scripts/test.sh (CI), not inside the build sandbox.
  doCheck = false;

  meta = {
    description = "Clustered Low-Latency HLS origin/edge server (RTMP, SRT in; LL-HLS out)";
    license = lib.licenses.asl20;
    mainProgram = "sluice";
    platforms = lib.platforms.linux;
  };
}
