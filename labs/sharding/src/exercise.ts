/**
 * The learner's file. Replace this example with the lab's naive version: plausible, the one a candidate
 * would write on a whiteboard, never `throw new Error('TODO')`. It must type-check.
 */

/** Counts the words in `text`. */
export function countWords(text: string): number {
  // TODO(lab): runs of spaces and empty input are counted wrong.
  return text.split(' ').length;
}
