/**
 * The axios instance every provider client uses by default. Provider APIs answer where they
 * are asked, so redirects are not followed (a 3xx is an error like any other non-2xx): axios
 * then calls node:http directly instead of through its redirect-following wrapper, which
 * roughly halves its own CPU per call. Connections are kept alive and reused.
 */
import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import axios, { type AxiosInstance } from 'axios';

export function createProviderHttp(): AxiosInstance {
  return axios.create({
    maxRedirects: 0,
    httpAgent: new HttpAgent({ keepAlive: true }),
    httpsAgent: new HttpsAgent({ keepAlive: true }),
  });
}
