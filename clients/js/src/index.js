// wsbridge's JavaScript client: plain ES modules, no dependencies, for browsers and Node.
export { connect, WsBridgeClient, DEFAULTS } from './client.js';
export { WsBridgeError, CLIENT_ERROR_CODES } from './errors.js';
export { matches as topicMatches } from './topics.js';
