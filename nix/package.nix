# The `sluice` binary, built from the repository's Cargo.lock; `withSdi`: with the
# `sdi` feature (DeckLink capture through GStreamer), its plugins found at run time.
{ lib, rustPlatform, pkg-config, makeWrapper, gst_all_1, withSdi ? false }:

let
  gstPlugins = with gst_all_1; [
    gst-plugins-base
    gst-plugins-good
    gst-plugins-bad # decklinkvideosrc, decklinkaudiosrc
    gst-plugins-ugly # x264enc
    gst-libav # avenc_aac
  ];
in
rustPlatform.buildRustPackage {
  pname = if withSdi then "sluice-sdi" else "sluice";
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
  buildFeatures = lib.optional withSdi "sdi";

  nativeBuildInputs = lib.optionals withSdi [ pkg-config makeWrapper ];
  buildInputs = lib.optionals withSdi [ gst_all_1.gstreamer gst_all_1.gst-plugins-base ];
  postInstall = lib.optionalString withSdi ''
    wrapProgram $out/bin/sluice \
      --prefix GST_PLUGIN_SYSTEM_PATH_1_0 : ${lib.makeSearchPathOutput "lib" "lib/gstreamer-1.0" gstPlugins}
  '';

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
