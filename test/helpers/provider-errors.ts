/**
 * Assertions shared by the provider client tests: a call must fail with the given error
 * class from the given provider, and the error is handed back for closer checks. Also the
 * form-body reader for requests intercepted with nock.
 */
import assert from 'node:assert/strict';
import type nock from 'nock';
import { ProviderError, TransportError } from '../../src/providers/errors.js';

async function rejectsWith<E extends Error & { provider: string }>(promise: Promise<unknown>, kind: new (...args: never[]) => E, provider: string): Promise<E> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof kind, `expected a ${kind.name}, got ${String(error)}`);
    assert.equal(error.provider, provider);
    return error;
  }
  assert.fail(`the call resolved; expected a ${kind.name}`);
}

/** Awaits a rejection and hands back the ProviderError (failing if it is anything else). */
export const providerError = (promise: Promise<unknown>, provider: string) => rejectsWith(promise, ProviderError, provider);
/** Awaits a rejection and hands back the TransportError (failing if it is anything else). */
export const transportError = (promise: Promise<unknown>, provider: string) => rejectsWith(promise, TransportError, provider);

/** The form body as the SDK sent it (nock hands it over as the raw string for form posts). */
export function formOf(body: nock.Body): URLSearchParams {
  return typeof body === 'string' ? new URLSearchParams(body) : new URLSearchParams(Object.entries(body).map(([k, v]): [string, string] => [k, String(v)]));
}
