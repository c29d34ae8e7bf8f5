"""The aiohttp server: REST + WebSocket, a SQLite queue/history/library, and its security."""
