// Test hosts as network namespaces with their own sshd: see src/bench/netns-hosts.ts.
export { makeHosts, whyNoHosts, nsPids } from '../../dist/bench/netns-hosts.js';
