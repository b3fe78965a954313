// Tokens signed by the tests, for a gateway started with a `JWT_SECRET` of its own: claims
// the dev sign-in cannot give (a `channels` grant), changed between two connects.

import { createHmac } from 'node:crypto';

/** A secret for such a gateway (HS256 wants at least 32 bytes). */
export const TEST_SECRET = 'wsbridge-js-client-tests-secret-of-32-bytes-or-more';

const base64url = (value) => Buffer.from(value).toString('base64url');

/** An HS256 JWT for `sub` with `claims` besides, valid for an hour. */
export function signToken(sub, claims = {}, secret = TEST_SECRET) {
  const header = base64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const exp = Math.floor(Date.now() / 1000) + 3600;
  const payload = base64url(JSON.stringify({ sub, exp, ...claims }));
  const signature = createHmac('sha256', secret).update(`${header}.${payload}`).digest('base64url');
  return `${header}.${payload}.${signature}`;
}
