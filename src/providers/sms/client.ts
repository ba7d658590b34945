/**
 * Africa's Talking SMS through the `africastalking` SDK. The SDK sets no timeout, ships
 * no types and reports per-recipient failures inside a 201: this wrapper adds a timeout,
 * types and parses the answer, and checks each recipient's statusCode.
 *
 * Trap: a username of `sandbox` switches the SDK to the sandbox host for the whole process.
 */
import { createRequire } from 'node:module';
import { z } from 'zod';
import { ProviderError, TransportError } from '../errors.js';
import { classifyAxiosError } from '../whatsapp/client.js';

export type SmsClientSettings = {
  apiKey: string | undefined;
  username: string | undefined;
  senderId: string | undefined;
  useSandbox: boolean;
  timeoutMs: number;
};

export type SmsClient = {
  readonly configured: boolean;
  /** Sends one SMS to a stored number (2547XXXXXXXX); resolves with AT's messageId. */
  send(to: string, message: string): Promise<{ messageId: string; statusCode: number }>;
};

const Recipient = z.looseObject({
  statusCode: z.coerce.number().int(),
  number: z.string().optional(),
  status: z.string().optional(),
  messageId: z.string().optional(),
});
const SendResult = z.looseObject({ SMSMessageData: z.looseObject({ Message: z.string().optional(), Recipients: z.array(Recipient) }) });

type AtSms = { send(params: { to: string[]; message: string; from?: string }): Promise<unknown> };
type AtFactory = (options: { apiKey: string; username: string }) => { SMS: AtSms };

const require = createRequire(import.meta.url);

/** 100 processed, 101 sent, 102 queued: accepted. 5xx: gateway trouble, try again. 4xx: final. */
export function classifyRecipientStatus(statusCode: number): 'accepted' | 'retryable' | 'final' {
  if (statusCode === 100 || statusCode === 101 || statusCode === 102) return 'accepted';
  if (statusCode >= 500) return 'retryable';
  return 'final';
}

function atError(data: unknown): { message?: string } {
  return typeof data === 'string' && data.length < 300 ? { message: data } : {};
}

function classifyRejection(error: unknown): ProviderError | TransportError {
  // The SDK rejects invalid numbers itself, before any request: final.
  if (error instanceof Error && /phone number/i.test(error.message) && !('isAxiosError' in error)) {
    return new ProviderError({ provider: 'sms', message: 'invalid phone number', code: 'invalid_number', retryable: false });
  }
  return classifyAxiosError('sms', error, atError);
}

export function createSmsClient(settings: SmsClientSettings): SmsClient {
  const username = settings.useSandbox ? 'sandbox' : settings.username;
  const configured = settings.apiKey !== undefined && username !== undefined;
  let sms: AtSms | undefined;

  return {
    configured,
    async send(to, message) {
      if (!configured || settings.apiKey === undefined || username === undefined) {
        throw new TransportError({ provider: 'sms', reason: 'not_configured', message: 'SMS_API_KEY / SMS_USERNAME are not set' });
      }
      sms ??= (require('africastalking') as AtFactory)({ apiKey: settings.apiKey, username }).SMS;
      const params = { to: [`+${to.replace(/^\+/, '')}`], message, ...(settings.senderId === undefined ? {} : { from: settings.senderId }) };
      let timer: NodeJS.Timeout | undefined;
      let raw: unknown;
      try {
        raw = await Promise.race([
          sms.send(params),
          new Promise<never>((_, reject) => {
            timer = setTimeout(() => reject(new TransportError({ provider: 'sms', reason: 'timeout', message: `no answer in ${settings.timeoutMs} ms` })), settings.timeoutMs);
          }),
        ]);
      } catch (error) {
        if (error instanceof TransportError) throw error;
        // The SDK rejects any 2xx other than 201 with the bare response body: if that body is a
        // send result, the messages were accepted, and retrying would send them twice.
        if (SendResult.safeParse(error).success) {
          raw = error;
        } else {
          throw classifyRejection(error);
        }
      } finally {
        clearTimeout(timer);
      }
      const parsed = SendResult.safeParse(raw);
      const recipient = parsed.success ? parsed.data.SMSMessageData.Recipients[0] : undefined;
      if (recipient === undefined) {
        const text = parsed.success ? parsed.data.SMSMessageData.Message ?? 'no recipient in answer' : 'unexpected answer';
        throw new ProviderError({ provider: 'sms', message: text.slice(0, 200), retryable: false });
      }
      const outcome = classifyRecipientStatus(recipient.statusCode);
      if (outcome !== 'accepted' || recipient.messageId === undefined || recipient.messageId === 'None') {
        throw new ProviderError({
          provider: 'sms',
          message: recipient.status ?? 'not accepted',
          code: String(recipient.statusCode),
          retryable: outcome === 'retryable',
        });
      }
      return { messageId: recipient.messageId, statusCode: recipient.statusCode };
    },
  };
}
