/**
 * The smallest job there is: proves the queue runs end to end (enqueue in a transaction,
 * a worker picks it up). Scheduled every few minutes; its completion count in /metrics
 * tells an operator the workers are alive.
 */
import { z } from 'zod';
import type { JobDefinition } from './queue.js';

export const heartbeatJob = {
  name: 'system-heartbeat',
  schema: z.object({ source: z.enum(['schedule', 'manual']) }),
  retryLimit: 0,
  async handle(data, { logger }) {
    logger.debug({ source: data.source }, 'heartbeat');
  },
} satisfies JobDefinition<z.ZodObject<{ source: z.ZodEnum<{ schedule: 'schedule'; manual: 'manual' }> }>>;
