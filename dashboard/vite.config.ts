import { defineConfig } from "vite";

export default defineConfig({
  build: { outDir: "dist", emptyOutDir: true, assetsDir: "assets" },
  test: {
    // Browser tests start real binaries and a real Chromium: one file at a time, generous timeouts.
    fileParallelism: false,
    testTimeout: 120_000,
    hookTimeout: 120_000,
  },
});
