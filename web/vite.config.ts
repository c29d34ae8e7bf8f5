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
  server: {
    proxy: {
      "/api": "http://127.0.0.1:8188",
      "/ws": { target: "ws://127.0.0.1:8188", ws: true },
    },
  },
  test: {
    include: ["test/**/*.test.ts"],
    environment: "node",
  },
});
