import { defineConfig } from "vite";

// Content-hashed names under assets/ (served immutable), no inline scripts or styles (the
// page's CSP allows none), nothing fetched from a CDN at run time.
export default defineConfig({
  build: {
    outDir: "dist",
    emptyOutDir: true,
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    cssCodeSplit: false,
    target: "es2022",
    reportCompressedSize: true,
  },
});
