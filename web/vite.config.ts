/// <reference types="vitest/config" />
import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// The built editor ships inside the Python package: `diffgraph serve` serves this folder.
export default defineConfig({
  plugins: [react()],
  base: "./",
  build: {
    outDir: "../diffgraph/server/static",
    emptyOutDir: true,
    chunkSizeWarningLimit: 800,
  },
  // `npm run dev` against `diffgraph serve` on :8188: the server only accepts its own Host and
  // Origin on state-changing requests, so the proxy presents them as the server's own
  server: {
    proxy: {
      "/api": {
        target: "http://127.0.0.1:8188",
        changeOrigin: true,
        configure: (proxy) => proxy.on("proxyReq", (request) => request.setHeader("origin", "http://127.0.0.1:8188")),
      },
      "/ws": { target: "ws://127.0.0.1:8188", ws: true, changeOrigin: true },
    },
  },
  test: {
    include: ["test/**/*.test.ts"],
    environment: "node",
  },
});
