/**
 * WhatsApp Cloud API client: sends text, reply buttons, lists and templates, and turns
 * every failure into a ProviderError (Meta answered) or TransportError (no answer), each
 * classified retryable or not. A factory over axios with a timeout on every call.
 */
import axios, { type AxiosInstance } from 'axios';
import { createProviderHttp, preparedJsonPost } from '../http.js';
import type { MessageContent } from '../../domain/outbound.js';
import { ProviderError, TransportError } from '../errors.js';
import { ErrorResponse, SendResponse } from './schemas.js';

export type WhatsAppClientSettings = {
  baseUrl: string;
  apiVersion: string;
  phoneId: string | undefined;
  token: string | undefined;
  timeoutMs: number;
};

export type TemplateMessage = { name: string; language: string; parameters: readonly string[]; buttonPayload?: string };

export type WhatsAppClient = {
  readonly configured: boolean;
  /** `wamid` null: Meta accepted the message (2xx) but its answer did not name it. */
  send(to: string, content: MessageContent): Promise<{ wamid: string | null }>;
  sendTemplate(to: string, template: TemplateMessage): Promise<{ wamid: string | null }>;
};

/** Meta error codes worth another try (with backoff), from Meta's error-code reference. */
const retryableCodes = new Set([1, 2, 4, 17, 341, 80007, 130429, 131000, 131016, 131056, 133004]);

function interactiveBody(content: MessageContent): Record<string, unknown> {
  switch (content.type) {
    case 'text':
      return { type: 'text', text: { preview_url: false, body: content.body } };
    case 'buttons':
      return {
        type: 'interactive',
        interactive: {
          type: 'button',
          body: { text: content.body },
          ...(content.footer === undefined ? {} : { footer: { text: content.footer } }),
          action: { buttons: content.buttons.map((b) => ({ type: 'reply', reply: { id: b.id, title: b.title } })) },
        },
      };
    case 'list':
      return {
        type: 'interactive',
        interactive: {
          type: 'list',
          body: { text: content.body },
          action: {
            button: content.button,
            sections: content.sections.map((s) => ({
              ...(s.title === undefined ? {} : { title: s.title }),
              rows: s.rows.map((r) => ({ id: r.id, title: r.title, ...(r.description === undefined ? {} : { description: r.description }) })),
            })),
          },
        },
      };
  }
}

/**
 * A Retry-After header in whole seconds from now, as the provider asked (capping the wait is the
 * delivery rules' job, src/domain/delivery.ts), or undefined when it is missing or invalid.
 * Either form of RFC 9110: delta-seconds (digits only: "-5", "1.5", "NaN", "7s" are invalid) or
 * an HTTP-date (a date in the past is 0). Always a finite integer >= 0: a number of digits too
 * large to hold exactly counts as Number.MAX_SAFE_INTEGER (far beyond any cap).
 */
function retryAfterSeconds(value: unknown): number | undefined {
  if (typeof value !== 'string') return undefined;
  const text = value.trim();
  if (/^\d+$/.test(text)) return Math.min(Number(text), Number.MAX_SAFE_INTEGER);
  // HTTP-date: IMF-fixdate, or the obsolete RFC 850 and asctime forms; each starts with a day name.
  if (!/^(Mon|Tue|Wed|Thu|Fri|Sat|Sun)/i.test(text)) return undefined;
  const at = Date.parse(text);
  return Number.isFinite(at) ? Math.max(0, Math.ceil((at - Date.now()) / 1000)) : undefined;
}

function retryAfter(headers: unknown): number | undefined {
  return retryAfterSeconds((headers as Record<string, unknown> | undefined)?.['retry-after']);
}

export function classifyAxiosError(provider: string, error: unknown, codeOf: (data: unknown) => { code?: string; message?: string }): ProviderError | TransportError {
  if (axios.isAxiosError(error)) {
    if (error.response !== undefined) {
      const status = error.response.status;
      const { code, message } = codeOf(error.response.data);
      const numeric = code === undefined ? undefined : Number(code);
      const retryable = status >= 500 || status === 429 || (numeric !== undefined && retryableCodes.has(numeric));
      return new ProviderError({
        provider,
        message: message ?? `HTTP ${status}`,
        httpStatus: status,
        ...(code === undefined ? {} : { code }),
        retryable,
        ...(retryAfter(error.response.headers) === undefined ? {} : { retryAfterSeconds: retryAfter(error.response.headers) }),
      });
    }
    const timedOut = error.code === 'ECONNABORTED' || error.code === 'ETIMEDOUT' || /timeout/i.test(error.message);
    return new TransportError({ provider, reason: timedOut ? 'timeout' : 'network', message: error.code ?? error.message });
  }
  return new TransportError({ provider, reason: 'network', message: error instanceof Error ? error.message : String(error) });
}

function metaError(data: unknown): { code?: string; message?: string } {
  const parsed = ErrorResponse.safeParse(data);
  if (!parsed.success) return {};
  const { code, message } = parsed.data.error;
  return { ...(code === undefined ? {} : { code: String(code) }), ...(message === undefined ? {} : { message }) };
}

export function createWhatsAppClient(settings: WhatsAppClientSettings, http: AxiosInstance = createProviderHttp()): WhatsAppClient {
  const configured = settings.token !== undefined && settings.phoneId !== undefined;
  const url = `${settings.baseUrl}/${settings.apiVersion}/${settings.phoneId}/messages`;
  const postJson = preparedJsonPost(http, { timeout: settings.timeoutMs, headers: { Authorization: `Bearer ${settings.token}`, 'Content-Type': 'application/json' } });

  async function post(to: string, body: Record<string, unknown>): Promise<{ wamid: string | null }> {
    if (!configured) {
      throw new TransportError({ provider: 'whatsapp', reason: 'not_configured', message: 'WABA_TOKEN / WABA_PHONE_ID are not set' });
    }
    try {
      const response = await postJson(url, { messaging_product: 'whatsapp', recipient_type: 'individual', to, ...body });
      const parsed = SendResponse.safeParse(response.data);
      // A 2xx is Meta's acceptance, whatever its body says: sending again (or by SMS) would
      // deliver the message twice. Only its id, for the status webhooks, is then unknown.
      return { wamid: parsed.success ? parsed.data.messages[0]!.id : null };
    } catch (error) {
      if (error instanceof ProviderError) throw error;
      throw classifyAxiosError('whatsapp', error, metaError);
    }
  }

  return {
    configured,
    send: (to, content) => post(to, interactiveBody(content)),
    sendTemplate: (to, template) =>
      post(to, {
        type: 'template',
        template: {
          name: template.name,
          language: { code: template.language },
          components: [
            ...(template.parameters.length === 0 ? [] : [{ type: 'body', parameters: template.parameters.map((text) => ({ type: 'text', text })) }]),
            ...(template.buttonPayload === undefined
              ? []
              : [{ type: 'button', sub_type: 'quick_reply', index: '0', parameters: [{ type: 'payload', payload: template.buttonPayload }] }]),
          ],
        },
      }),
  };
}
