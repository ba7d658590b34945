/** pg-boss's own SQL builders (pg-boss 10, src/plans.js): only what src/jobs/queue.ts uses. */
declare module 'pg-boss/src/plans.js' {
  /** The bulk insert behind PgBoss#insert: $1 the jobs as JSON, $2-$6 the instance's defaults. */
  export function insertJobs(schema: string): string;
}
