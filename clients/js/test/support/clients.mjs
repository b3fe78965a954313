// Clients for a test file, all closed at its end.

import { connect } from '../../src/index.js';

export function clientsOf(gateway) {
  const made = [];
  return {
    /** A client for `user`, its token fetched fresh on every connect; `calls` counts them. */
    make(user, options = {}) {
      const tokenCalls = { count: 0 };
      const client = connect({
        url: gateway.wsUrl,
        token: async () => {
          tokenCalls.count += 1;
          return gateway.token(user);
        },
        ...options,
      });
      client.tokenCalls = tokenCalls;
      made.push(client);
      return client;
    },
    closeAll() {
      for (const client of made) client.close();
    },
  };
}
