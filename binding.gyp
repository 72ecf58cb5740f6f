{
  # The node-gyp build of the addon, used by prebuildify (which builds with
  # node-gyp only). It compiles the same sources as CMakeLists.txt, taken from
  # scripts/native-sources.js, against the libtorch scripts/find-libtorch.js finds,
  # with c10d (native/dist) when scripts/find-dist.js finds its headers.
  "targets": [
    {
      "target_name": "ngate",
      "sources": ["<!@(node scripts/native-sources.js)"],
      "include_dirs": [
        "native",
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "<!@(node scripts/find-libtorch.js --include)",
        "<!@(node scripts/find-dist.js --include)"
      ],
      "libraries": [
        "-L<!(node scripts/find-libtorch.js --libdir)",
        "<!@(node scripts/find-libtorch.js --libs)",
        "-Wl,-rpath,<!(node scripts/find-libtorch.js --libdir)"
      ],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED",
        "<!@(node scripts/find-dist.js --defines)"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-std=gnu++1y", "-std=gnu++17"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-frtti", "-O2"],
      "conditions": [
        ["OS=='linux'", {
          "cflags_cc": ["<!(node scripts/find-libtorch.js --abi-flag)"],
          "defines": ["NGATE_TORCH_CXX11_ABI=<!(node scripts/find-libtorch.js --abi)"]
        }]
      ]
    }
  ]
}
