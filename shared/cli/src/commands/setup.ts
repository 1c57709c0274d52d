/**
 * `lab setup kafka`: assembles the pinned Apache Kafka from Maven Central into .tools/kafka/ now, rather
 * than when the first lab needs it (which happens by itself where a JDK 17+ and Maven are installed).
 * For a workshop's "install everything at home" step, or to see Maven's error on its own.
 */
import { assembleKafka, pinnedKafkaVersion } from '@labs/services';
import { c, say, UserError } from '../ui.ts';

/** What `setup` can prepare. */
const TOOLS = ['kafka'] as const;

export async function setup(what: string | undefined): Promise<number> {
  if (what !== 'kafka')
    throw new UserError(
      `${what ? `Nothing called "${what}" to set up. ` : ''}Usage: setup ${TOOLS.join('|')}   (assembles the Kafka broker the labs start, from Maven Central, into .tools/kafka/)`,
    );
  const whyNot = await assembleKafka({ log: (line) => say(c.dim(line)) });
  if (whyNot) throw new UserError(`Kafka cannot be assembled here: ${whyNot}`, 1);
  say(
    `${c.green('✓')} Kafka ${pinnedKafkaVersion()} is ready in .tools/kafka/; the labs start it when no Kafka answers.`,
  );
  return 0;
}
